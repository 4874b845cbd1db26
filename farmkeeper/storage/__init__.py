"""Storage backends for footage volumes: local paths and SMB shares, plus verified parallel copying.

``open_volume(access)`` returns a ``Volume`` (``LocalVolume`` when ``access.local_path`` exists, else
``SMBVolume``); ``copy_files(src, dst, items)`` copies between any two volumes.
"""

from __future__ import annotations

import os
from typing import Literal

from farmkeeper.storage.base import DeleteResult, Entry, Space, Volume, VolumeAccess
from farmkeeper.storage.copy import CopyItem, CopyReport, CopyResult, Progress, copy_files


def open_volume(access: VolumeAccess, *, prefer: Literal["auto", "local", "smb"] = "auto") -> Volume:
    """Open a volume: ``auto`` uses the local path if it is set and exists, else SMB."""
    if prefer == "local" or (prefer == "auto" and access.local_path and os.path.isdir(access.local_path)):
        from farmkeeper.storage.local import LocalVolume

        return LocalVolume(access)
    from farmkeeper.storage.smb import SMBVolume

    return SMBVolume(access)


__all__ = ["CopyItem", "CopyReport", "CopyResult", "DeleteResult", "Entry", "Progress", "Space", "Volume",
           "VolumeAccess", "copy_files", "open_volume"]

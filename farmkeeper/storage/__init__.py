"""Storage backends for footage volumes: local paths and SMB shares, plus verified parallel copying.

``open_volume(access)`` returns a ``Volume`` (``LocalVolume`` when ``access.local_path`` exists, else
``SMBVolume``); ``copy_files(src, dst, items)`` copies between any two volumes.
"""

from __future__ import annotations

import os
from typing import Literal

from farmkeeper.errors import StorageError, _rebuild_storage_error
from farmkeeper.storage.base import DeleteResult, Entry, Space, Volume, VolumeAccess
from farmkeeper.storage.copy import CopyItem, CopyReport, CopyResult, Progress, copy_files


def open_volume(access: VolumeAccess, *, prefer: Literal["auto", "local", "smb"] = "auto") -> Volume:
    """Open a volume: ``auto`` uses the local path if it is set and exists, else SMB.

    A local path that is set but missing is said in the error when SMB fails too (the mount is gone, or
    the path is mistyped), so the message is not only about port 445.
    """
    if prefer == "local" or (prefer == "auto" and access.local_path and os.path.isdir(access.local_path)):
        from farmkeeper.storage.local import LocalVolume

        return LocalVolume(access)
    from farmkeeper.storage.smb import SMBVolume

    if prefer != "auto" or not access.local_path:
        return SMBVolume(access)
    try:
        return SMBVolume(access)
    except StorageError as exc:
        raise _rebuild_storage_error(
            type(exc), exc.errno or 0, f"local path {access.local_path} does not exist (not mounted, or mistyped "
            f"in the farm file), so SMB was tried: {exc.message}", exc.server, exc.share, exc.path,
            exc.transient) from None


__all__ = ["CopyItem", "CopyReport", "CopyResult", "DeleteResult", "Entry", "Progress", "Space", "Volume",
           "VolumeAccess", "copy_files", "open_volume"]

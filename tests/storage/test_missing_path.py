"""A volume whose local ``path`` does not exist: the error says so, and that SMB was tried, not just port 445."""

from __future__ import annotations

import pytest

from farmkeeper.errors import StorageError
from farmkeeper.storage import VolumeAccess, open_volume


def test_missing_local_path_is_named_in_the_error(tmp_path: object) -> None:
    access = VolumeAccess(server="rec1", drive="D", host="127.0.0.99", port=445, username="farm", password="s3cret",
                          local_path="/srv/not-mounted/rec1/D")
    with pytest.raises(StorageError) as caught:
        open_volume(access)
    text = str(caught.value)
    assert "local path /srv/not-mounted/rec1/D does not exist" in text and "SMB was tried" in text
    assert "127.0.0.99" in text and "s3cret" not in text
    assert caught.value.transient                                # still the SMB error's kind (retried)
    # without a path the SMB error is unchanged
    with pytest.raises(StorageError) as plain:
        open_volume(VolumeAccess(server="rec1", drive="D", host="127.0.0.99", port=445))
    assert "local path" not in str(plain.value)

"""The presets inside a SoundFont file (read from its bytes), for naming a patch's sound."""
from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

from farm.errors import FarmError


# -- SoundFont presets --------------------------------------------------------------------------
def soundfont_presets(path: str | Path) -> dict[tuple[int, int], str]:
    """``{(bank, program): preset name}`` read from an SF2 file's ``phdr`` chunk (no synth needed)."""
    p = Path(path)
    st = p.stat()
    return _soundfont_presets(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _soundfont_presets(path: str, _size: int, _mtime: int) -> dict[tuple[int, int], str]:
    def bad(msg):
        return FarmError(f"not a readable SoundFont: {msg}", file=path)

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise bad("missing RIFF sfbk header")
        end = 8 + struct.unpack("<I", head[4:8])[0]
        pos = 12
        while pos + 8 <= end:
            f.seek(pos)
            chunk = f.read(12)
            if len(chunk) < 8:
                break
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if cid == b"LIST" and chunk[8:12] == b"pdta":
                sub, sub_end = pos + 12, pos + 8 + size
                while sub + 8 <= sub_end:
                    f.seek(sub)
                    sid, ssize = f.read(4), struct.unpack("<I", f.read(4))[0]
                    if sid == b"phdr":
                        raw = f.read(ssize)
                        presets = {}
                        for i in range(0, len(raw) - 38, 38):  # the last record is the EOP marker
                            name, program, bank = struct.unpack("<20sHH", raw[i:i + 24])
                            presets[(bank, program)] = name.split(b"\0")[0].decode("latin-1").strip()
                        return presets
                    sub += 8 + ssize + (ssize & 1)
            pos += 8 + size + (size & 1)
    raise bad("no preset headers (pdta/phdr)")



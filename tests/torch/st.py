"""st.py: minimal safetensors writer for test fixtures (no dependency beyond numpy).

Fixture scripts run under /usr/bin/python3 (Debian python3-torch); the `safetensors`
package is not installed there, so we write the format by hand:
8-byte little-endian header length, JSON header, then raw little-endian bytes.
Float tensors are stored as F32, integer tensors as I64 (labels).
"""
import json
import struct

import numpy as np


def save(path, tensors, metadata=None):
    """tensors: dict name -> numpy array or torch tensor (converted to F32 / I64)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        shape = list(a.shape)  # ascontiguousarray turns 0-d into (1,); keep () (num_batches_tracked)
        if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
            a, dtype = np.ascontiguousarray(a, dtype="<i8"), "I64"
        else:
            a, dtype = np.ascontiguousarray(a, dtype="<f4"), "F32"
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)  # align data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

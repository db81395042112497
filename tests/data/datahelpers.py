"""Writers of each dataset's exact on-disk format and independent readers (no tonic, no
spikescan), used to round-trip files through the loaders."""
import numpy as np


def write_nmnist_bin(path, x, y, p, t_us):
    """N-MNIST 40-bit events: x 8 bits, y 8 bits, p 1 bit + t 23 bits (us), big-endian t."""
    x, y, p, t = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t_us))
    assert np.all(t < 2**23)
    raw = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.astype(np.uint8).tofile(path)


def read_nmnist_bin(path):
    """Independent decoder of the 40-bit format (with the 2^13 us overflow markers, y == 240)."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == 240
    t = t + np.cumsum(overflow) * 2**13
    keep = ~overflow
    return x[keep], y[keep], p[keep], t[keep]


def write_hsd_h5(path, times_s, units, labels, n_keys, label_dtype=np.uint16,
                 unit_dtype=np.uint16):
    """SHD/SSC layout: ragged spikes/times (s, float) and spikes/units, labels, extra/*."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        tt = f.create_dataset("spikes/times", (len(times_s),), dtype=h5py.vlen_dtype(np.float32))
        uu = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(unit_dtype))
        for i, (t, u) in enumerate(zip(times_s, units)):
            tt[i] = np.asarray(t, dtype=np.float32)
            uu[i] = np.asarray(u, dtype=unit_dtype)
        f.create_dataset("labels", data=np.asarray(labels, dtype=label_dtype))
        f.create_dataset("extra/keys", data=np.array([f"k{i}".encode() for i in range(n_keys)]))
        f.create_dataset("extra/speaker", data=np.zeros(len(labels), dtype=np.uint16))


def expected_sample(times_ms, channels):
    """Reference canonical order: sort by time, then channel."""
    t = np.asarray(times_ms, dtype=np.float64)
    c = np.asarray(channels, dtype=np.int64)
    o = np.lexsort((c, t))
    return t[o], c[o]

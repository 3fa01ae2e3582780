#!/usr/bin/env python3
"""import_keras_dsen2cr.py: the published DSen2-CR weights (Keras HDF5) as a nimbus model file.

    scripts/import_keras_dsen2cr.py MODEL.hdf5 OUT.safetensors [--loss carl|l1] [--overwrite]

Meraner et al. released DSen2-CR trained on SEN12MS-CR (CARL and L1 losses, with and without SAR)
as Keras 2.2.4 / TensorFlow HDF5 checkpoints (github.com/ameraner/dsen2-cr, README). Training one
takes GPU-days; converted, it runs in `remove_clouds --weights OUT.safetensors` and
`cloud_impact --cr OUT.safetensors` (`--cr-nosar` for the models without SAR) at once, and
`train_dsen2cr --init OUT.safetensors` fine-tunes it. OUT holds PyTorch's names (head.*, blocks.<i>.conv1/
conv2.*, tail.*), which models::load_model reads without metadata: B, F and SAR from the shapes.

What is read, as Keras 2.2.4 writes it (keras/engine/saving.py):
  - a whole model (ModelCheckpoint with save_weights_only=False, as the authors' code saved it): the
    weights under the group "model_weights"; or save_weights' file: the weights at the root.
  - that group's attribute "layer_names" (or "layer_names0", "layer_names1", ... when Keras split a
    long list), the model's layers in model.layers order; each layer's group has "weight_names",
    its weights in order ("conv2d_7/kernel:0", "conv2d_7/bias:0"), each a dataset at that path.
Keras loads such a file by position: the layers that have weights, in that order, get the file's
weights in that order. We take them the same way, so the convolutions come in the network's order
(input conv, then each block's two, then the output conv), whatever their auto-numbered names
(conv2d_10 sorts before conv2d_2, and an HDF5 group lists its members sorted). A checkpoint of
Keras's multi_gpu_model holds the whole network as one layer ("model_1"); its weights come in the
same order and are read the same way.

A Keras Conv2D kernel is (kh, kw, in, out) whatever the data format (the authors used
channels_first; TensorFlow convolves by cross-correlation, as nimbus does), so each weight is
transposed to (out, in, kh, kw). --loss records the loss the checkpoint was trained with (the README
names each file's), as train_dsen2cr records its own: carl (the paper's lambda 1 and cloud threshold
0.2) or l1; cloud_impact's report then compares it with Meraner et al.'s row of that loss. The inputs are scaled as nimbus scales them (data/normalize.h is
DSen2-CR's dataIO: S2 DN clipped to [0, 10000] / 2000; S1 dB clipped and mapped to [0, 2]), and the
model's long skip adds the normalised cloudy S2 as the Keras model does. The Keras model's 27-channel
training output (prediction, cloudy input, zeros) is a loss-side trick: its first 13 channels are the
prediction, which is what nimbus's DSen2-CR returns.

Checked before anything is written: an HDF5 file (h5py), TensorFlow's or CNTK's backend (Theano
stored flipped kernels), Keras 2 (Keras 1 named and laid out weights otherwise; a file without a
keras_version is Keras 1 to Keras's loader too), exactly 2B + 2 convolutions with a
3x3 kernel and a bias each, shaped as DSen2-CR's (13 + 2 or 13 -> F, B x 2 x (F -> F), F -> 13),
every value finite. Written to a temporary file beside OUT and renamed into place; OUT is never the
input, and an existing OUT is replaced only with --overwrite.

Needs python3-h5py and python3-numpy (Debian's: scripts/install_deps.sh --keras installs them; run it
with /usr/bin/python3 when another python3 comes first on the PATH).
Exit status: 0 converted, 1 the file is not a DSen2-CR Keras checkpoint, OUT cannot be written or h5py
is missing (the message says why), 2 usage (a missing input, OUT existing or the input, OUT's folder missing).
"""
import argparse
import json
import os
import struct
import sys
import tempfile

S2_BANDS, S1_BANDS = 13, 2


class NotDSen2CR(Exception):
    """The input is unreadable or not a DSen2-CR Keras checkpoint; the message says why."""


def text(v):
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def string_list(group, name):
    """A list attribute as Keras writes it: whole, or split as name0, name1, ... when it was long."""
    if name in group.attrs:
        v = group.attrs[name]
        return [text(v)] if isinstance(v, (bytes, str)) else [text(x) for x in v]
    out, k = [], 0
    while f"{name}{k}" in group.attrs:
        out += [text(v) for v in group.attrs[f"{name}{k}"]]
        k += 1
    return out


def keras_weights(path):
    """Every weight of the file, in Keras's loading order: [(layer, weight name, float32 array)]."""
    try:
        import h5py
        import numpy as np
    except ImportError as e:
        raise SystemExit(f"import_keras_dsen2cr.py: {e.name} is missing: scripts/install_deps.sh --keras installs "
                         "python3-h5py and python3-numpy (Debian's python, /usr/bin/python3)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NotDSen2CR(f"not an HDF5 file ({e})")
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layers = string_list(root, "layer_names")
        if not layers:
            raise NotDSen2CR("no Keras weights: neither a \"model_weights\" group nor a \"layer_names\" attribute")
        backend = text(root.attrs.get("backend", f.attrs.get("backend", b"tensorflow")))
        if backend not in ("tensorflow", "cntk"):
            raise NotDSen2CR(f"saved by Keras's {backend} backend; only TensorFlow's (and CNTK's) kernel layout is "
                             "read (Theano's kernels are stored flipped)")
        # As Keras's loader: a file that does not say is Keras 1's (keras/engine/saving.py).
        version = text(root.attrs.get("keras_version", f.attrs.get("keras_version", b"1")))
        if version.startswith("1"):
            raise NotDSen2CR(f"saved by Keras {version}; Keras 1 laid its weights out otherwise (Keras 2 needed)")
        out = []
        for layer in layers:
            if layer not in root:
                raise NotDSen2CR(f"layer \"{layer}\" is listed in layer_names but has no group")
            g = root[layer]
            for name in string_list(g, "weight_names"):
                if name not in g:
                    raise NotDSen2CR(f"layer \"{layer}\" lists weight \"{name}\" but has no such dataset")
                d = g[name]
                if not isinstance(d, h5py.Dataset):
                    raise NotDSen2CR(f"layer \"{layer}\" lists weight \"{name}\", which is a group, not a dataset")
                if d.dtype.kind != "f":
                    raise NotDSen2CR(f"weight \"{name}\" of layer \"{layer}\" is {d.dtype}, not floating point")
                try:
                    a = np.asarray(d[()], dtype=np.float64)
                except (OSError, TypeError, ValueError) as e:  # a damaged dataset, an empty one
                    raise NotDSen2CR(f"weight \"{name}\" of layer \"{layer}\" cannot be read ({e})")
                if not np.all(np.isfinite(a)):
                    raise NotDSen2CR(f"weight \"{name}\" of layer \"{layer}\" holds NaN or infinity")
                a32 = a.astype(np.float32)
                if not np.all(np.isfinite(a32)):
                    raise NotDSen2CR(f"weight \"{name}\" of layer \"{layer}\" holds values past float32's range")
                out.append((layer, name, a32))
        return out, version, backend


def dsen2cr_tensors(weights):
    """Keras's (kernel, bias) pairs in order -> nimbus's names, (out, in, 3, 3) weights. Raises NotDSen2CR."""
    if len(weights) % 2:
        raise NotDSen2CR(f"{len(weights)} weight arrays: DSen2-CR's convolutions have a kernel and a bias each")
    convs = []
    for i in range(0, len(weights), 2):
        (layer, kname, k), (_, bname, b) = weights[i], weights[i + 1]
        if not (kname.endswith("kernel:0") and bname.endswith("bias:0")):
            raise NotDSen2CR(f"layer \"{layer}\": weights \"{kname}\", \"{bname}\" are not a convolution's kernel "
                             "and bias (DSen2-CR has no other weights)")
        if k.ndim != 4 or k.shape[:2] != (3, 3) or b.shape != (k.shape[3],):
            raise NotDSen2CR(f"layer \"{layer}\": kernel {k.shape} and bias {b.shape} are not a 3x3 convolution's "
                             "(3, 3, in, out) and (out,)")
        convs.append((layer, k, b))
    if len(convs) < 4 or len(convs) % 2:
        raise NotDSen2CR(f"{len(convs)} convolutions: DSen2-CR has 2B + 2, B >= 1 (an input conv, two a block, "
                         "an output conv)")
    head_in, features = convs[0][1].shape[2], convs[0][1].shape[3]
    if head_in not in (S2_BANDS, S2_BANDS + S1_BANDS):
        raise NotDSen2CR(f"the first convolution (\"{convs[0][0]}\") takes {head_in} channels; DSen2-CR takes "
                         f"{S2_BANDS} (S2) or {S2_BANDS + S1_BANDS} (S2 + S1)")
    expect = [(head_in, features)] + [(features, features)] * (len(convs) - 2) + [(features, S2_BANDS)]
    for (layer, k, _), want in zip(convs, expect):
        if (k.shape[2], k.shape[3]) != want:
            raise NotDSen2CR(f"convolution \"{layer}\" maps {k.shape[2]} -> {k.shape[3]} channels where DSen2-CR "
                             f"(F = {features}, {len(convs)} convolutions) maps {want[0]} -> {want[1]}")
    names = ["head"]
    for blk in range((len(convs) - 2) // 2):
        names += [f"blocks.{blk}.conv1", f"blocks.{blk}.conv2"]
    names.append("tail")
    tensors = {}
    for name, (_, k, b) in zip(names, convs):
        tensors[name + ".weight"] = k.transpose(3, 2, 0, 1).copy()  # (kh, kw, in, out) -> (out, in, kh, kw)
        tensors[name + ".bias"] = b
    return tensors, (len(convs) - 2) // 2, int(features), head_in == S2_BANDS + S1_BANDS


def write_safetensors(path, tensors, metadata):
    """The safetensors format: u64 header length, JSON header, then each tensor's little-endian bytes."""
    import numpy as np
    header, blobs, at = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    out_dir = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for raw in blobs:
                f.write(raw)
        umask = os.umask(0)  # mkstemp's file is 0600: give it what a new file gets, as the C++ writers do
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main():
    p = argparse.ArgumentParser(description="Convert the published DSen2-CR Keras HDF5 weights to a nimbus model "
                                            "file (safetensors, PyTorch's names).")
    p.add_argument("model", help="the Keras checkpoint (.hdf5 / .h5)")
    p.add_argument("out", help="the nimbus model file to write (.safetensors)")
    p.add_argument("--loss", choices=["carl", "l1"], help="the loss it was trained with (recorded as "
                   "train_dsen2cr records its own; cloud_impact's report compares with that row of the paper)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    a = p.parse_args()
    if not os.path.isfile(a.model):
        print(f"{a.model}: no such file", file=sys.stderr)
        return 2
    if not os.path.isdir(os.path.dirname(os.path.abspath(a.out))):
        print(f"{a.out}: its folder does not exist", file=sys.stderr)
        return 2
    if os.path.exists(a.out):
        if os.path.samefile(a.out, a.model):
            print(f"{a.out}: is the input; choose another output", file=sys.stderr)
            return 2
        if not a.overwrite:
            print(f"{a.out}: exists; pass --overwrite to replace it", file=sys.stderr)
            return 2
    try:
        weights, version, backend = keras_weights(a.model)
        tensors, blocks, features, sar = dsen2cr_tensors(weights)
    except NotDSen2CR as e:
        print(f"{a.model}: {e}", file=sys.stderr)
        return 1
    params = sum(t.size for t in tensors.values())
    meta = {"converted_from": os.path.basename(a.model), "source_format": f"Keras {version} HDF5 ({backend} backend)"}
    if a.loss == "carl":  # train_dsen2cr's "run." settings (apps/common/training.h): the paper's values
        meta.update({"run.loss": "carl --lambda 1", "run.cloud-threshold": "0.2"})
    elif a.loss == "l1":
        meta["run.loss"] = "l1"
    try:
        write_safetensors(a.out, tensors, meta)
    except OSError as e:
        print(f"{a.out}: cannot write it ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"{a.out}: dsen2cr(B={blocks}, F={features}, {'SAR' if sar else 'no SAR'}), {2 * blocks + 2} "
          f"convolutions, {params:,} parameters, from {a.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""gen_keras_dsen2cr.py: small DSen2-CR checkpoints laid out as Keras 2.2.4 writes them, and what the
Keras network computes from them, for scripts/import_keras_dsen2cr.py's tests.

Keras is not in Debian (nor TensorFlow), so the files are written with h5py to Keras 2.2.4's layout
(keras/engine/saving.py, save_model and save_weights_to_hdf5_group), and the expected outputs come
from a float64 numpy forward of the Keras network (Code/dsen2cr_network.py of ameraner/dsen2-cr:
channels_first; Conv2D 'same' with kernels (kh, kw, in, out), cross-correlation as TensorFlow's;
resBlock x + 0.1 * conv(relu(conv(x))); the long skip adds the cloudy S2 input).

Writes tests/fixtures/keras/:
  dsen2cr_B5_F4_sar.hdf5          a whole model (ModelCheckpoint, save_weights_only=False): the
                                  weights under "model_weights", model_config, training_config and
                                  optimizer_weights beside them; 12 convolutions named conv2d_1 ..
                                  conv2d_12, so that their names' sorted order (and HDF5's, which
                                  lists groups sorted) is not the network's
  dsen2cr_B5_F4_sar_multigpu.hdf5 the same weights as Keras's multi_gpu_model saves them: the whole
                                  network one layer ("model_1") of the parallel model
  dsen2cr_B1_F4_nosar_weights.h5  save_weights' file (the weights at the root), its layer_names
                                  split in two (layer_names0, layer_names1) as Keras splits a long list
  bad_theano.h5, bad_nan.h5, bad_tail.h5, bad_missing_conv.h5, bad_no_version.h5, bad_dense.h5
                                  one defect each (a Theano backend, a NaN weight, an output conv
                                  F -> 3, a block with one conv, no keras_version, a Dense layer
                                  among the convs)
  expected.safetensors            s2 (1,13,10,14) and s1 (1,2,10,14) in the normalised domain,
                                  out_sar and out_nosar (1,13,10,14): the two networks' outputs

Run with Debian's python (python3-h5py, python3-numpy; scripts/install_deps.sh --dev):
  /usr/bin/python3 tests/torch/gen_keras_dsen2cr.py
"""
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "keras")
rng = np.random.default_rng(20261207)


def conv_weights(cin, cout):
    """He-uniform kernel (kh, kw, in, out) as Keras's, and a bias that is not zero (so that its place shows)."""
    bound = np.sqrt(6.0 / (9 * cin))
    return (rng.uniform(-bound, bound, (3, 3, cin, cout)).astype(np.float32),
            rng.uniform(-0.1, 0.1, cout).astype(np.float32))


def keras_conv(x, kernel, bias):
    """Conv2D(padding='same'), channels_first, in float64: x (C, H, W), kernel (3, 3, C, O) -> (O, H, W)."""
    c, h, w = x.shape
    xp = np.zeros((c, h + 2, w + 2))
    xp[:, 1:-1, 1:-1] = x
    out = np.zeros((kernel.shape[3], h, w)) + bias.astype(np.float64)[:, None, None]
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("chw,co->ohw", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx].astype(np.float64))
    return out


def keras_forward(convs, s2, s1):
    """Code/dsen2cr_network.py's DSen2CR_model, first 13 output channels (the prediction)."""
    x = np.concatenate([s2, s1]) if s1 is not None else s2
    x = np.maximum(keras_conv(x, *convs[0]), 0)
    for i in range(1, len(convs) - 1, 2):
        t = keras_conv(np.maximum(keras_conv(x, *convs[i]), 0), *convs[i + 1])
        x = x + t * 0.1
    return keras_conv(x, *convs[-1]) + s2


def model_layers(blocks, sar):
    """model.layers of DSen2CR_model as Keras 2.2.4 orders them (by depth from the inputs), with the
    weights of each: [(name, [(weight name, array)])]. Names are Keras's auto-numbered ones."""
    counters = {}

    def name(kind):
        counters[kind] = counters.get(kind, 0) + 1
        return f"{kind}_{counters[kind]}"

    layers = [(name("input"), []), (name("input"), [])]
    if sar:
        layers.append((name("concatenate"), []))
    convs = []

    def conv(cin, cout):
        k, b = conv_weights(cin, cout)
        n = name("conv2d")
        convs.append((k, b))
        layers.append((n, [(f"{n}/kernel:0", k), (f"{n}/bias:0", b)]))

    features = 4
    conv(15 if sar else 13, features)
    layers.append((name("activation"), []))
    for _ in range(blocks):
        conv(features, features)
        layers.append((name("activation"), []))
        conv(features, features)
        layers.append((name("lambda"), []))
        layers.append((name("add"), []))
    conv(features, 13)
    layers.append((name("add"), []))
    layers.append((name("concatenate"), []))
    layers.append((name("lambda"), []))
    return layers, convs


def write_weights(group, layers, split=False):
    """save_weights_to_hdf5_group: layer_names (split when asked), backend, keras_version; a group per
    layer with its weight_names and a dataset per weight at that name's path."""
    names = [n.encode() for n, _ in layers]
    if split:
        half = len(names) // 2
        group.attrs["layer_names0"], group.attrs["layer_names1"] = names[:half], names[half:]
    else:
        group.attrs["layer_names"] = names
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = b"2.2.4"
    for n, weights in layers:
        g = group.create_group(n)
        g.attrs["weight_names"] = [w.encode() for w, _ in weights]
        for w, a in weights:
            g.create_dataset(w, data=a)


def write_model(path, layers):
    """save_model: attributes, the weights under model_weights, the optimiser's beside them."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        config = {"class_name": "Model", "config": {"name": "model_1", "layers": [
            {"name": n, "class_name": n.rsplit("_", 1)[0].title().replace("2d", "2D")} for n, _ in layers]}}
        f.attrs["model_config"] = json.dumps(config).encode()
        f.attrs["training_config"] = json.dumps({"optimizer_config": {"class_name": "Nadam",
                                                                      "config": {"lr": 7e-5}}}).encode()
        write_weights(f.create_group("model_weights"), layers)
        opt = f.create_group("optimizer_weights")
        opt.attrs["weight_names"] = [b"training/Nadam/Variable:0"]
        opt.create_dataset("training/Nadam/Variable:0", data=np.zeros((3, 3, 15, 4), np.float32))


def write_weights_file(path, layers, split=False, backend=None):
    with h5py.File(path, "w") as f:
        write_weights(f, layers, split)
        if backend:
            f.attrs["backend"] = backend.encode()


def main():
    os.makedirs(OUT, exist_ok=True)
    s2 = rng.uniform(0.0, 1.5, (13, 10, 14))
    s1 = rng.uniform(0.0, 2.0, (2, 10, 14))
    sar_layers, sar_convs = model_layers(5, sar=True)
    write_model(os.path.join(OUT, "dsen2cr_B5_F4_sar.hdf5"), sar_layers)
    # The same network as Keras's multi_gpu_model saves it: the template model is one layer of the
    # parallel model ("model_1", between the inputs' slices and the outputs' merge), its weights those of
    # the template's layers in order, each at model_1/<its name>.
    multi = [("input_1", []), ("input_2", []), ("lambda_7", []), ("lambda_8", []), ("lambda_9", []),
             ("lambda_10", []), ("model_1", [w for _, ws in sar_layers for w in ws]), ("concatenate_3", [])]
    write_model(os.path.join(OUT, "dsen2cr_B5_F4_sar_multigpu.hdf5"), multi)
    nosar_layers, nosar_convs = model_layers(1, sar=False)
    write_weights_file(os.path.join(OUT, "dsen2cr_B1_F4_nosar_weights.h5"), nosar_layers, split=True)
    st.save(os.path.join(OUT, "expected.safetensors"), {
        "s2": s2[None].astype(np.float32), "s1": s1[None].astype(np.float32),
        "out_sar": keras_forward(sar_convs, s2.astype(np.float32), s1.astype(np.float32))[None],
        "out_nosar": keras_forward(nosar_convs, s2.astype(np.float32), None)[None]},
        {"source": "tests/torch/gen_keras_dsen2cr.py"})

    # One defect each, on the small no-SAR network.
    write_weights_file(os.path.join(OUT, "bad_theano.h5"), nosar_layers, backend="theano")
    nan_layers = [(n, [(w, a.copy()) for w, a in ws]) for n, ws in nosar_layers]
    dict(nan_layers)["conv2d_2"][0][1][1, 1, 0, 0] = np.nan  # a kernel value of the block's first conv
    write_weights_file(os.path.join(OUT, "bad_nan.h5"), nan_layers)
    k, b = conv_weights(4, 3)  # the output conv F -> 3 instead of F -> 13
    tail = [(n, [("conv2d_4/kernel:0", k), ("conv2d_4/bias:0", b)] if n == "conv2d_4" else ws)
            for n, ws in nosar_layers]
    write_weights_file(os.path.join(OUT, "bad_tail.h5"), tail)
    missing = [(n, ws) for n, ws in nosar_layers if n != "conv2d_3"]
    write_weights_file(os.path.join(OUT, "bad_missing_conv.h5"), missing)
    write_weights_file(os.path.join(OUT, "bad_no_version.h5"), nosar_layers)
    with h5py.File(os.path.join(OUT, "bad_no_version.h5"), "a") as f:
        del f.attrs["keras_version"]  # Keras's loader takes such a file for Keras 1's
    dense = list(nosar_layers)
    dense.insert(4, ("dense_1", [("dense_1/kernel:0", rng.standard_normal((4, 4)).astype(np.float32)),
                                 ("dense_1/bias:0", np.zeros(4, np.float32))]))
    write_weights_file(os.path.join(OUT, "bad_dense.h5"), dense)


if __name__ == "__main__":
    main()

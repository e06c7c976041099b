"""The seed notebook's Keras code, verbatim, for `convlens bench` (runs in a Python with TensorFlow).

Usage: python bench_keras.py SEED EPOCHS FILES_JSON. Only the data loading differs from the
notebook: `fashion_mnist.load_data()` downloads, so the same four IDX files convlens uses
are read here with NumPy instead. Imports neither torch nor convlens.
"""

import gzip
import json
import resource
import sys
import time

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    seed, epochs, files = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    (train_images, train_labels) = (read_idx(files["train_images"]), read_idx(files["train_labels"]))
    (test_images, test_labels) = (read_idx(files["test_images"]), read_idx(files["test_labels"]))

    # --- the seed notebook, verbatim -------------------------------------------------------
    train_images = train_images/255.
    test_images = test_images/255.

    model = tf.keras.models.Sequential([
        tf.keras.layers.Conv2D(64, (3,3), activation = "relu", input_shape = (28,28, 1)),
        tf.keras.layers.MaxPool2D(2,2),
        tf.keras.layers.Conv2D(64, (3,3), activation = "relu"),
        tf.keras.layers.MaxPool2D(2,2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(128, activation = "relu"),
        tf.keras.layers.Dense(10, activation = "softmax")
    ])

    model.compile(optimizer = "Adam", loss = "sparse_categorical_crossentropy", metrics = ['accuracy'])
    # ----------------------------------------------------------------------------------------
    setup = time.perf_counter() - t0
    per_epoch = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self.t        # training only: evaluation below is not counted
            _, acc = self.model.evaluate(test_images.reshape(-1,28,28,1), test_labels, verbose=0)
            per_epoch.append({"epoch": epoch + 1, "train_time_s": elapsed, "test_accuracy": float(acc)})

    model.fit(train_images.reshape(-1,28,28,1), train_labels, epochs = epochs, verbose=0, callbacks=[Timer()])
    out = {"setup_s": setup, "epochs": per_epoch, "precision": "float32", "tensorflow": tf.__version__,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("BENCH " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

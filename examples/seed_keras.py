"""The seed note's Keras code, as it is, plus one line: model.save("seed.keras").

    python examples/seed_keras.py            # TensorFlow's Keras (make bench-keras builds .venv-keras)
    convlens import seed.keras               # the trained Keras model as a convlens run
    convlens report seed-keras-…             # and everything convlens shows about it

The one other change: this machine has no internet, so the images come from the Debian package
dataset-fashion-mnist (the same files fashion_mnist.load_data() downloads) instead of the download.
"""

import gzip
from pathlib import Path

import numpy as np
import tensorflow as tf

FILES = Path("/usr/share/datasets/fashion-mnist")


def load_data():
    """fashion_mnist.load_data(), from the files on disk."""
    def read(name, offset):
        with gzip.open(FILES / name) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)
    train = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28), read("train-labels-idx1-ubyte.gz", 8)
    test = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28), read("t10k-labels-idx1-ubyte.gz", 8)
    return train, test


# ---- the seed note's code ----
(train_images, train_labels), (test_images, test_labels) = load_data()

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
model.fit(train_images.reshape(-1,28,28,1),train_labels, epochs = 5)
model.summary()
model.evaluate(test_images.reshape(-1,28,28,1),test_labels)
# ---- and the one line more ----
model.save("seed.keras")

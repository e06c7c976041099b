"""Real Keras models for the import tests, built with the `keras` package on its PyTorch backend.

Importing this module sets KERAS_BACKEND=torch before keras is imported (no TensorFlow needed).
Each builder returns (model, what it is fed): "0-1" for pixels / 255 (the seed notebook), or
"0-255" for raw pixels (the model rescales them itself).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
from keras import layers


def seed():
    """The seed note's network, exactly as its notebook writes it (243,786 parameters)."""
    model = keras.Sequential([
        layers.Conv2D(64, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D(2, 2),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D(2, 2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    return model, "0-1"


def same_dropout():
    """Two `same`-padded convolutions, dropout, a strided max pool and a plain linear output (logits)."""
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(3, strides=2, padding="same"),
        layers.Conv2D(32, 5, padding="same", activation="tanh"),
        layers.Dropout(0.25),
        layers.AveragePooling2D(3, strides=1, padding="same"),   # padding left out of each mean
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10),
    ])
    return model, "0-1"


def batch_norm():
    """Convolutions without bias, each followed by BatchNormalization and a ReLU layer; a BN after Flatten."""
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(24, 3, use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, use_bias=False),
        layers.BatchNormalization(epsilon=1e-2),
        layers.Activation("relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.BatchNormalization(),
        layers.Dense(64, activation="sigmoid"),
        layers.Dense(10, activation="softmax"),
    ])
    return model, "0-1"


def strided_gap():
    """A Functional chain fed raw pixels: Rescaling, strided convolutions, global average pooling."""
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = layers.Conv2D(48, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs), "0-255"


def rgb32():
    """RGB 32×32 images (Fashion-MNIST padded and coloured in the test), max pools with 3×3 windows."""
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(16, 5, activation="relu"),
        layers.MaxPooling2D(3, strides=3),
        layers.Conv2D(32, 3, padding="same", activation="elu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    return model, "0-1"


MODELS = {"seed": seed, "same_dropout": same_dropout, "batch_norm": batch_norm, "strided_gap": strided_gap,
          "rgb32": rgb32}


def as_rgb32(x: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 grey images as (N, 32, 32, 3) colour ones: padded by 2, each channel a tint."""
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.stack([padded, (padded * 0.6).astype(np.uint8), 255 - padded], axis=-1)


def fit_briefly(model, x: np.ndarray, y: np.ndarray, fed: str, seed: int = 0):
    """A few hundred steps on real images, so the weights (and BN statistics) are not their initial ones."""
    keras.utils.set_random_seed(seed)
    last = model.layers[-1]
    softmax = getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax), metrics=["accuracy"])
    inputs = x.astype("float32") / (1.0 if fed == "0-255" else 255.0)
    model.fit(inputs, y, batch_size=64, epochs=1, verbose=0)
    return model

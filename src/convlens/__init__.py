"""convlens: train, explain and serve small convolutional image classifiers.

    from convlens import load_fashion_mnist, build_model, summarize, train, TrainConfig
    run = train(TrainConfig(model="seed", epochs=5))
    print(run.results["test_accuracy"])

In Jupyter, what these return draws itself (a run, a summary, an evaluation, kernels, feature maps:
convlens.notebook); `convlens.import_keras("model.keras")` makes a run of a Keras model.

This file only gathers the public API; no module of the package imports it.
"""

from . import notebook
from .config import RECIPES, Recipe, TrainConfig
from .datasets import Dataset, load_dataset, load_fashion_mnist
from .convolution import convolution_lab
from .errors import ConvlensError, DataError, ImageError, RunError, SpecError
from .evaluate import Evaluation, evaluate, predict
from .idx import read_idx
from .images import load_image
from .inspect import feature_maps
from .kerasimport import import_keras
from .loop import fit
from .models import ConvNet, build_model
from .runs import Run, open_run
from .spec import PRESETS, parse_spec, register_preset
from .summary import Summary, summarize
from .train import resume, train
from .versions import convlens_version
from .views import evaluate_run

__version__ = convlens_version()
notebook.register()          # in IPython (Jupyter, VS Code, Colab): convlens's types show themselves

__all__ = ["Dataset", "load_dataset", "load_fashion_mnist", "read_idx", "ConvlensError", "DataError", "ImageError",
           "RunError", "SpecError", "Evaluation", "evaluate", "evaluate_run", "predict", "load_image", "PRESETS",
           "ConvNet", "build_model", "feature_maps", "parse_spec", "register_preset", "Run", "open_run", "Summary",
           "summarize", "RECIPES", "Recipe", "TrainConfig", "fit", "resume", "train", "convolution_lab", "import_keras",
           "notebook"]

"""convlens: train, explain and serve small convolutional image classifiers.

    from convlens import load_fashion_mnist, build_model, summarize, train, TrainConfig
    run = train(TrainConfig(model="seed", epochs=5))
    print(run.results["test_accuracy"])

In Jupyter, what these return draws itself (a run, a summary, an evaluation, kernels, feature maps:
convlens.notebook); `convlens.import_keras("model.keras")` makes a run of a Keras model.

This file only gathers the public API; no module of the package imports it.
"""

from . import notebook
from .attribution import attribution_map, integrated_gradients
from .config import RECIPES, Recipe, TrainConfig
from .convolution import convolution_lab
from .datasets import Dataset, load_dataset, load_fashion_mnist
from .errors import ConvlensError, DataError, ImageError, RunError, SpecError
from .evaluate import Evaluation, evaluate, predict
from .explanations import randomisation_check
from .faithfulness import deletion_curves
from .features import class_views, maximise_filters, top_crops
from .idx import read_idx
from .images import load_image
from .inspect import feature_maps
from .kerasimport import import_keras
from .loop import fit
from .models import ConvNet, build_model
from .runs import Run, open_run
from .sanity import cascading_randomisation
from .spec import PRESETS, parse_spec, register_preset
from .summary import Summary, summarize
from .train import resume, train
from .versions import convlens_version
from .views import evaluate_run

__version__ = convlens_version()
notebook.register()          # in IPython (Jupyter, VS Code, Colab): convlens's types show themselves

__all__ = [
           "PRESETS",
           "RECIPES",
           "ConvNet",
           "ConvlensError",
           "DataError",
           "Dataset",
           "Evaluation",
           "ImageError",
           "Recipe",
           "Run",
           "RunError",
           "SpecError",
           "Summary",
           "TrainConfig",
           "attribution_map",
           "build_model",
           "cascading_randomisation",
           "class_views",
           "convolution_lab",
           "deletion_curves",
           "evaluate",
           "evaluate_run",
           "feature_maps",
           "fit",
           "import_keras",
           "integrated_gradients",
           "load_dataset",
           "load_fashion_mnist",
           "load_image",
           "maximise_filters",
           "notebook",
           "open_run",
           "parse_spec",
           "predict",
           "randomisation_check",
           "read_idx",
           "register_preset",
           "resume",
           "summarize",
           "top_crops",
           "train",
]

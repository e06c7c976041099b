"""convlens: train, explain and serve small convolutional image classifiers.

    from convlens import load_fashion_mnist, build_model, summarize, train, TrainConfig
    run = train(TrainConfig(model="seed", epochs=5))
    print(run.results["test_accuracy"])

This file only gathers the public API; no module of the package imports it.
"""

from .attribution import attribution_map, integrated_gradients
from .config import RECIPES, Recipe, TrainConfig
from .datasets import Dataset, load_dataset, load_fashion_mnist
from .errors import ConvlensError, DataError, ImageError, RunError, SpecError
from .evaluate import Evaluation, evaluate, predict
from .faithfulness import deletion_curves
from .features import class_views, maximise_filters, top_crops
from .idx import read_idx
from .images import load_image
from .inspect import feature_maps
from .loop import fit
from .models import PRESETS, ConvNet, build_model, parse_spec, register_preset
from .runs import Run, open_run
from .sanity import cascading_randomisation
from .summary import Summary, summarize
from .train import resume, train
from .versions import convlens_version
from .views import evaluate_run

__version__ = convlens_version()

__all__ = ["Dataset", "load_dataset", "load_fashion_mnist", "read_idx", "ConvlensError", "DataError", "ImageError",
           "RunError", "SpecError", "Evaluation", "evaluate", "evaluate_run", "predict", "load_image", "PRESETS",
           "ConvNet", "build_model", "feature_maps", "parse_spec", "register_preset", "Run", "open_run", "Summary",
           "summarize", "RECIPES", "Recipe", "TrainConfig", "fit", "resume", "train", "attribution_map",
           "integrated_gradients", "cascading_randomisation", "deletion_curves", "top_crops", "maximise_filters",
           "class_views"]

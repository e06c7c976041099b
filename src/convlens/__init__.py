"""convlens: train, explain and serve small convolutional image classifiers.

    from convlens import load_fashion_mnist, build_model, summarize, train, TrainConfig
    run = train(TrainConfig(model="seed", epochs=5))
    print(run.results["test_accuracy"])
"""

__version__ = "0.1.0"

from .data import Dataset, load_dataset, load_fashion_mnist, read_idx
from .errors import ConvlensError, DataError, ImageError, RunError, SpecError
from .evaluate import Evaluation, evaluate, evaluate_run, predict
from .images import load_image
from .models import PRESETS, ConvNet, build_model, feature_maps, parse_spec, register_preset
from .runs import Run, open_run
from .summary import Summary, summarize
from .train import RECIPES, History, Recipe, TrainConfig, fit, train

__all__ = ["Dataset", "load_dataset", "load_fashion_mnist", "read_idx", "ConvlensError", "DataError",
           "ImageError", "RunError", "SpecError", "Evaluation", "evaluate", "evaluate_run", "predict",
           "load_image", "PRESETS", "ConvNet", "build_model", "feature_maps", "parse_spec", "register_preset",
           "Run", "open_run", "Summary", "summarize", "RECIPES", "History", "Recipe", "TrainConfig", "fit",
           "train"]

"""The Keras-style layer table, with the arithmetic behind every parameter count."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SpecError
from .models import LayerInfo, layer_infos, shape_text
from .spec import PRESETS, resolve


@dataclass(frozen=True)
class Summary:
    name: str                       # preset name or the spec itself
    spec: str
    input_shape: tuple[int, int, int]
    layers: list[LayerInfo]

    @property
    def total_params(self) -> int:
        return sum(l.params for l in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(l.trainable for l in self.layers)

    @property
    def mult_adds(self) -> int:
        return sum(l.mult_adds for l in self.layers)

    def to_dict(self) -> dict:
        return {"name": self.name, "spec": self.spec, "input_shape": list(self.input_shape),
                "total_params": self.total_params, "trainable_params": self.trainable_params,
                "mult_adds": self.mult_adds,
                "layers": [{"name": l.name, "type": l.type, "token": l.spec.token,
                            "output_shape": list(l.out_shape), "output": shape_text(l.out_shape),
                            "params": l.params, "mult_adds": l.mult_adds, "arithmetic": l.arithmetic}
                           for l in self.layers]}

    def text(self) -> str:
        """The table as plain text (what `convlens summary` prints)."""
        rows = [(f"{l.name} ({l.type})", shape_text(l.out_shape), f"{l.params:,}", f"{l.mult_adds:,}", l.arithmetic)
                for l in self.layers]
        head = ("Layer (type)", "Output shape", "Param #", "Mult-adds", "Why that many parameters")
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
        right = {2, 3}

        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        rule = "─" * len(line(head))
        title = f'Model: "{self.name}"' + ("" if self.name == self.spec else f"  ({self.spec})")
        out = [title, f"Input: {shape_text(self.input_shape)} (height × width × channels)", rule, line(head),
               "═" * len(rule)]
        out += [line(r) for r in rows]
        out += [rule,
                f"Total params: {self.total_params:,}",
                f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.total_params - self.trainable_params:,}",
                f"Multiply-adds per image: {self.mult_adds:,} (forward pass)",
                rule]
        return "\n".join(out)


def summarize(model: str = "seed", input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
              whole: bool = True) -> Summary:
    """Summary of a preset or spec for images of `input_shape` (C, H, W); SpecError if it does not fit.
    whole=False: the start of a spec, which need not end with the output layer yet."""
    spec = resolve(model.strip(), num_classes)
    name = model.strip() if model.strip() in PRESETS else spec
    return Summary(name, spec, tuple(input_shape), layer_infos(spec, input_shape, num_classes, whole))


def summarize_so_far(model: str, input_shape: tuple[int, int, int] = (1, 28, 28),
                     num_classes: int = 10) -> tuple[Summary | None, SpecError | None]:
    """A spec as it is typed: its summary, or the summary of the layers before the first token that is
    wrong or unfinished (None if there are none) and that token's error."""
    try:
        return summarize(model, input_shape, num_classes), None
    except SpecError as e:
        bad = e.token_index
        if not bad:
            return None, e
        tokens = resolve(model.strip(), num_classes).split("-")
        for keep in (bad, bad - 1):       # the token itself may be whole (a spec not yet ending in dense10)
            try:
                return (summarize("-".join(tokens[:keep]), input_shape, num_classes, whole=False) if keep else None), e
            except SpecError:
                continue
        return None, e

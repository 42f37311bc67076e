"""Dissection coverage: every timm and torchvision model name, built on the meta device and dissected.

For each name the model is built with the library's defaults and no weights in memory
(:func:`~stabilityscope.models.vision.on_meta`), then :func:`~stabilityscope.models.dissect.dissect` runs on it. A
name counts as covered when it builds and yields at least one fully connected map (with the
default dissection, or else with ``conv1x1=True``: headless models whose FC maps are all 1×1
convolutions, e.g. ``focalnet_huge_fl4`` built with ``num_classes=0``); ``head_ok``
checks that a classifier head was found with the model's number of classes as its fan-out.
Names that cannot be built at all are reported with the reason.

    python -m stabilityscope.models.coverage                 # the full sweep (make coverage), ~10 min on 2 cores
    python -m stabilityscope.models.coverage --sample        # the representative CI sample
    python -m stabilityscope.models.coverage --library torchvision --json coverage.json
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Sequence

from torch import nn

from stabilityscope.models.dissect import dissect
from stabilityscope.models.vision import build_torchvision, on_meta, timm_names, torchvision_names

LIBRARIES = ("timm", "torchvision")

# A representative sample across families (CI): CNNs, ViTs and hybrids, MLP-Mixers, ConvNeXts,
# models with two heads, conv heads, fused and separate attention projections.
SAMPLE: dict[str, tuple[str, ...]] = {
    "timm": ("resnet18", "resnet50d", "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "mixer_s16_224",
             "resmlp_12_224", "gmlp_s16_224", "convnext_atto", "convnextv2_atto", "efficientnet_b0",
             "mobilenetv3_small_050", "swin_tiny_patch4_window7_224", "levit_128s", "coat_lite_tiny", "poolformer_s12",
             "regnetx_002", "densenet121", "eva02_tiny_patch14_224", "maxvit_nano_rw_256", "crossvit_tiny_240",
             "pit_ti_224", "cait_xxs24_224", "xcit_nano_12_p16_224", "edgenext_xx_small", "fastvit_t8",
             "mobilevit_xxs", "inception_v3", "vgg11", "dla34", "tnt_s_patch16_224"),
    "torchvision": ("resnet18", "vgg11_bn", "mobilenet_v3_small", "vit_b_16", "swin_t", "convnext_tiny",
                    "squeezenet1_0", "regnet_x_400mf", "googlenet", "inception_v3", "maxvit_t", "efficientnet_b0",
                    "shufflenet_v2_x0_5", "densenet121", "alexnet", "mnasnet0_5"),
}


@dataclass
class CoverageResult:
    """The dissection of one model name."""

    library: str
    name: str
    built: bool
    maps: int = 0  # FC maps (records of every kind)
    square: int = 0  # square FC maps and chains (iterated maps)
    chains: int = 0  # MLP blocks d → h → d
    heads: int = 0  # records with role head
    head_ok: bool = False  # a head whose fan-out is the model's number of classes
    conv1x1_maps: int = 0  # FC maps with dissect(conv1x1=True), counted when the default finds none
    build_seconds: float = 0.0
    dissect_seconds: float = 0.0
    error: str = ""  # why it could not be built or dissected

    @property
    def covered(self) -> bool:
        """Built, and at least one FC map with the default dissection or with 1×1 convs as FC maps."""
        return self.built and not self.error and (self.maps >= 1 or self.conv1x1_maps >= 1)


def _build(library: str, name: str) -> nn.Module:
    if library == "timm":
        import timm

        return on_meta(timm.create_model, name, pretrained=False)
    return on_meta(build_torchvision, name, 3, 1000)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def dissect_name(library: str, name: str) -> CoverageResult:
    """Build ``name`` of ``library`` on the meta device and dissect it."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _build(library, name)
    except Exception as exc:  # the reason is the result
        return CoverageResult(library, name, False, build_seconds=time.perf_counter() - start, error=_reason(exc))
    built = time.perf_counter()
    try:
        records = dissect(model)
        conv_maps = 0 if records else len(dissect(model, conv1x1=True))  # e.g. headless all-1×1-conv models
    except Exception as exc:
        return CoverageResult(library, name, True, build_seconds=built - start,
                              dissect_seconds=time.perf_counter() - built, error=_reason(exc))
    done = time.perf_counter()
    n_classes = getattr(model, "num_classes", None)
    heads = [r for r in records if r.role == "head"]
    if n_classes == 0:  # built without a classifier (feature models): correct when none is reported
        head_ok = not heads
    else:
        head_ok = bool(heads) and (n_classes is None or any(r.fan_out == n_classes for r in heads))
    return CoverageResult(library, name, True, len(records), sum(r.square for r in records),
                          sum(r.kind == "chain" for r in records), len(heads), head_ok, conv_maps, built - start,
                          done - built)


def sweep(names: Iterable[tuple[str, str]], progress: Optional[Callable[[CoverageResult], None]] = None
          ) -> list[CoverageResult]:
    """:func:`dissect_name` for every (library, name); ``progress`` sees each result as it comes."""
    results = []
    for library, name in names:
        r = dissect_name(library, name)
        results.append(r)
        if progress:
            progress(r)
        gc.collect()
    return results


def all_names(libraries: Sequence[str] = LIBRARIES, sample: bool = False) -> list[tuple[str, str]]:
    """(library, model name) of every model to try: all of them, or the CI sample."""
    out = []
    for lib in libraries:
        names = SAMPLE[lib] if sample else (timm_names() if lib == "timm" else torchvision_names())
        out += [(lib, n) for n in names]
    return out


def summary(results: Sequence[CoverageResult]) -> str:
    """Per-library counts, the names not covered with their reasons, and timings (Markdown)."""
    lines = ["| library | names | built | ≥ 1 FC map | of which only as 1×1 convs | head found | with chains "
             "| build s | dissect s |", "|---|---|---|---|---|---|---|---|---|"]
    for lib in sorted({r.library for r in results}):
        rs = [r for r in results if r.library == lib]
        lines.append(f"| {lib} | {len(rs)} | {sum(r.built for r in rs)} | {sum(r.covered for r in rs)} | "
                     f"{sum(r.covered and r.maps == 0 for r in rs)} | "
                     f"{sum(r.head_ok for r in rs)} | {sum(r.chains > 0 for r in rs)} | "
                     f"{sum(r.build_seconds for r in rs):.1f} | {sum(r.dissect_seconds for r in rs):.1f} |")
    missing = [r for r in results if not r.covered]
    if missing:
        lines += ["", "Not covered:"]
        lines += [f"- {r.library} {r.name}: {r.error or 'no fully connected map'}" for r in missing]
    no_head = [r for r in results if r.covered and not r.head_ok]
    if no_head:
        reasons = Counter("no head record" if not r.heads else "head fan-out ≠ num_classes" for r in no_head)
        lines += ["", f"Covered but head not matched ({len(no_head)}): "
                  + ", ".join(f"{k}: {v}" for k, v in reasons.items()),
                  "  " + ", ".join(f"{r.library}:{r.name}" for r in no_head[:40])
                  + (" ..." if len(no_head) > 40 else "")]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m stabilityscope.models.coverage``: build and dissect every model; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", choices=(*LIBRARIES, "all"), default="all")
    parser.add_argument("--sample", action="store_true", help="only the representative CI sample")
    parser.add_argument("--json", help="write every result to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no per-model lines")
    args = parser.parse_args(argv)
    libs = LIBRARIES if args.library == "all" else (args.library,)
    names = all_names(libs, args.sample)

    def show(r: CoverageResult) -> None:
        if not args.quiet:
            state = (f"{r.maps} maps ({r.chains} chains)" if r.maps else f"{r.conv1x1_maps} maps as 1×1 convs") \
                if r.covered else f"NOT COVERED {r.error}"
            print(f"{r.library:11s} {r.name:60s} {state}  {r.build_seconds + r.dissect_seconds:.2f}s", flush=True)

    start = time.perf_counter()
    results = sweep(names, show)
    print(summary(results))
    covered = sum(r.covered for r in results)
    print(f"\ncovered {covered}/{len(results)} names in {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    # a model that builds but yields no map is a dissection gap: fail
    return 0 if all(r.covered or not r.built for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Export a trained model (ONNX, torch.export's .pt2, safetensors, legacy TorchScript) and check
the export against PyTorch.

Every export is written to a temporary file, run on random and (when the run's dataset is at
hand) real inputs, compared with the PyTorch model, and only then renamed into place: an
export whose logits differ by more than ``tolerance`` is an error and leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.torch_version import TorchVersion

from .data.stream import uint8_batches
from .device import autocast
from .errors import VgglabError
from .evaluate.inference import Inference, load_inference
from .files import atomic_write, temp_beside, write_error
from .models import create_model_from_spec
from .models.features import feature_extractor
from .pretrained import is_pretrained
from .progress import Progress, track
from .run.checkpoint import read_safetensors, save_safetensors
from .run.files import check_output_file

# pt2: torch.export (ExportedProgram, dynamic batch), what torch now recommends; torchscript is the
# legacy format (torch.jit.save warns that it is deprecated), kept for runtimes that still load it
FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors", "torchscript": ".ts.pt"}
ONNX_OPSET = 18
ONNX_MIN_TORCH = "2.5"  # torch.onnx.export's dynamo=True with dynamic_shapes (torch 2.4 has neither)


def _inputs(inf: Inference, data_root: str | None) -> tuple[list[tuple[str, torch.Tensor]], str | None]:
    """Random inputs, and 8 test images when the run's dataset is at hand; else why not."""
    g = torch.Generator().manual_seed(0)
    c, s = inf.in_chans, inf.image_size
    inputs = [("random", torch.randn(3, c, s, s, generator=g))]
    try:
        split, _ = inf.load_split("test", data_root)
    except VgglabError as exc:
        return inputs, f"skipped the real-data parity check: {exc} (pass --data-root to include it)"
    inputs.append(("real", inf.prepare(split.images(slice(0, 8))).cpu()))
    return inputs, None


def _run_exported(fmt: str, path: str, x: torch.Tensor, inf: Inference) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return torch.from_numpy(sess.run(None, {name: x.numpy().astype(np.float32)})[0])
    if fmt == "torchscript":
        return torch.jit.load(path, map_location="cpu")(x)
    if fmt == "pt2":
        return torch.export.load(path).module()(x)
    state, _ = read_safetensors(path)
    model = create_model_from_spec(inf.meta.model_config).eval()
    model.load_state_dict(state)
    return model(x)


def export_model(
    checkpoint, fmt: str, out: str | Path | None = None, data_root: str | None = None, tolerance: float = 1e-4
) -> dict:
    """Export, check parity, and return ``{"path", "format", "max_abs_diff", "checked", "opset", "skipped"}``
    (``skipped``: why the real-data check did not run, else None)."""
    if fmt not in FORMATS:
        raise VgglabError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    src = Path(checkpoint)
    # default: RUN_DIR/export/, never over the run's own model.safetensors
    out = Path(out) if out else (src if src.is_dir() else src.parent) / "export" / f"model{FORMATS[fmt]}"
    check_output_file(out, [] if is_pretrained(checkpoint) else [src], example=f"model{FORMATS[fmt]}")
    if fmt == "onnx" and TorchVersion(torch.__version__) < ONNX_MIN_TORCH:
        raise VgglabError(
            f"ONNX export needs torch >= {ONNX_MIN_TORCH} (its dynamo exporter with a dynamic batch axis); this is torch "
            f"{torch.__version__}: upgrade torch, or export --format pt2 or safetensors"
        )
    inf = load_inference(checkpoint, "cpu")
    model = inf.model.eval()
    example = torch.randn(2, inf.in_chans, inf.image_size, inf.image_size)
    result: dict[str, object] = {"format": fmt, "opset": None}
    tmp = None
    try:
        tmp = temp_beside(out, FORMATS[fmt])
        if fmt == "onnx":
            try:
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
                import onnxscript  # noqa: F401
            except ImportError:
                raise VgglabError("ONNX export needs the export extra: pip install 'vgglab[export]'") from None
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                model,
                (example,),
                tmp,
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes={"x": {0: batch}},
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,  # the exporter's progress lines are not the user's: vgglab says one line when it is done
            )
            result["opset"] = ONNX_OPSET
        elif fmt == "pt2":
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
            with open(tmp, "wb") as f:  # a file object: a full disk is an OSError
                torch.export.save(program, f)
        elif fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, example)
            with open(tmp, "wb") as f:  # a file object: a full disk is an OSError, not torch's RuntimeError
                torch.jit.save(traced, f)
        else:
            save_safetensors(model, inf.meta, tmp)
        checked, worst = [], 0.0
        inputs, result["skipped"] = _inputs(inf, data_root)
        with torch.inference_mode(), Progress(sum(len(x) for _, x in inputs), f"export {fmt}: parity check") as progress:
            for name, x in inputs:
                diff = (_run_exported(fmt, tmp, x, inf).float() - model(x).float()).abs().max().item()
                worst = max(worst, diff)
                checked.append(f"{name} x{len(x)}")
                progress.advance(len(x))
        if not worst <= tolerance:
            raise VgglabError(
                f"{fmt} export differs from the PyTorch model by {worst:.2e} in logits (> {tolerance:g}); nothing was written"
            )
        os.replace(tmp, out)
    except OSError as exc:
        raise write_error(out, exc, os.path.getsize(tmp) if tmp and os.path.exists(tmp) else 0, at_least=True) from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    result.update(path=str(out), max_abs_diff=worst, checked=checked)
    return result


def extract_features(
    checkpoint,
    split: str = "test",
    layers: str | list[str] | None = None,
    data_root: str | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
) -> dict:
    """Embeddings of a split: the pre-logits embedding, or named layers' outputs averaged over
    space. Returns ``features`` (one layer, or the embedding), one array per layer name when
    several are asked for, ``labels`` and ``classes``."""
    inf = load_inference(checkpoint, "auto", precision=precision)
    data, _ = inf.load_split(split, data_root)
    batch_size = batch_size or inf.eval_batch_size
    model = inf.model
    layers = [layers] if isinstance(layers, str) else list(layers or [])
    extractor = feature_extractor(model, layers) if layers else None
    feats: dict[str, list[torch.Tensor]] = {name: [] for name in layers or ["features"]}
    with torch.inference_mode(), autocast(inf.device, inf.precision):
        for images in track(uint8_batches(data, batch_size), len(data), f"features {split}"):
            x = inf.prepare(images)
            got = (
                extractor(x)
                if extractor is not None
                else {"features": model.forward_head(model.forward_features(x), pre_logits=True)}
            )
            for name, f in got.items():
                feats[name].append((f.mean((2, 3)) if f.dim() == 4 else f).float().cpu())
    out = {name: torch.cat(parts).numpy() for name, parts in feats.items()}
    if len(out) == 1:
        out = {"features": next(iter(out.values()))}
    return {**out, "labels": data.y.numpy(), "classes": np.array(inf.classes), "precision": np.array(inf.precision)}


def features_out(out: str | Path, checkpoint) -> Path:
    """Where ``vgglab features --out`` writes: the path with .npz added when missing (as numpy
    does), checked to be a file path that is neither the checkpoint nor a run's own file."""
    out = Path(out)
    if out.suffix != ".npz" and not out.is_dir():
        out = out.with_name(out.name + ".npz")
    return check_output_file(out, [] if is_pretrained(checkpoint) else [checkpoint], example="features.npz")


def save_features(feats: dict, out: Path) -> Path:
    """Write :func:`extract_features`' arrays to ``out`` (see :func:`features_out`) as one .npz, atomically."""

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **feats)

    atomic_write(out, write, needed=sum(np.asarray(v).nbytes for v in feats.values()))
    return out

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report

from vgglab import create_model
from vgglab.cli import main
from vgglab.evaluate import compute_metrics, dense_logits, expected_calibration_error, load_inference, tta_probs
from vgglab.evaluate.checkpoint_eval import evaluate_checkpoint
from vgglab.run.checkpoint import load_checkpoint, model_from_checkpoint


def test_eval_matches_an_independent_computation(trained_run):
    # fp32, as the reference below: auto may evaluate in bf16 on a CPU with native bf16
    m = evaluate_checkpoint(trained_run, split="test", out=trained_run / "ev", device="cpu", precision="fp32")
    # independent: the checkpoint's model on the dataset's test split, normalised by hand
    ckpt = load_checkpoint(trained_run / "best.pt")
    model = model_from_checkpoint(ckpt).eval()
    inf = load_inference(trained_run, "cpu")
    test, _ = inf.load_split("test")
    mean, std = (torch.tensor(ckpt["normalization"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.inference_mode():
        logits = model((test.x.float() / 255 - mean) / std)
    pred = logits.argmax(1)
    assert m["top1"] == pytest.approx((pred == test.y).float().mean().item(), abs=1e-9)
    assert m["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, test.y).item(), rel=1e-4)
    assert m["n"] == len(test) == 360
    assert m["top1"] <= m["top2"] <= m["top5"] <= 1
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == 360 and (cm.sum(1) == np.bincount(test.y.numpy(), minlength=10)).all()
    ref = classification_report(test.y.numpy(), pred.numpy(), target_names=inf.classes, output_dict=True, zero_division=0)
    assert m["report"]["macro avg"] == pytest.approx(ref["macro avg"])
    assert m["report"]["3"] == pytest.approx(ref["3"])
    on_disk = json.loads((trained_run / "ev" / "eval.json").read_text())
    for key in [
        "split",
        "tta",
        "n",
        "loss",
        "top1",
        "top2",
        "top3",
        "top4",
        "top5",
        "ece",
        "per_class",
        "report",
        "confusion_matrix",
        "most_confused",
    ]:
        assert key in on_disk, key
    assert on_disk["per_class"]["0"] == pytest.approx(cm[0, 0] / cm[0].sum())


def test_most_confused_and_ece_by_hand():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.55, 0.45, 0.0]])
    y = torch.tensor([0, 1, 1, 2, 1])
    m = compute_metrics(probs, y, ["a", "b", "c"], topk=5)
    assert "top4" not in m and m["top3"] == 1.0 and m["top1"] == pytest.approx(3 / 5)
    assert m["most_confused"] == [{"true": "b", "predicted": "a", "count": 2}]
    # bins of width 1/15: confidences 0.9, 0.7, 0.6, 0.8, 0.55 each alone in a bin
    hand = (abs(1 - 0.9) + abs(1 - 0.7) + abs(0 - 0.6) + abs(1 - 0.8) + abs(0 - 0.55)) / 5
    assert expected_calibration_error(probs, y) == pytest.approx(hand)


@pytest.mark.parametrize(
    "name, options, size",
    [
        ("vgg11", {"width": 0.125, "hidden": 64}, 32),  # imagenet head, 1x1 map: FC6 sums the 49 taps
        ("vgg11_bn", {"width": 0.125, "hidden": 64}, 64),  # imagenet head, 2x2 map pooled to 7x7
        ("vgg16_cifar", {"width": 0.125, "hidden": 32}, 32),  # cifar head with BatchNorm1d
        ("vgg_cifar_i", {"width": 0.25, "input_size": 64}, 64),  # cifar head, 8x8 map flattened
        ("vgg13_bn", {"width": 0.125, "head": "gap"}, 32),
    ],
)
def test_dense_equals_the_plain_forward_at_training_size(name, options, size):
    model = create_model(name, num_classes=7, input_size=size, **{k: v for k, v in options.items() if k != "input_size"}).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        torch.testing.assert_close(dense_logits(model, x), model(x), atol=1e-4, rtol=1e-4)
        big = dense_logits(model, torch.randn(2, 3, size + 32, size + 32))  # larger image: a map of logits, averaged
    assert big.shape == (2, 7) and torch.isfinite(big).all()


def test_flip_tta_is_the_average_of_image_and_mirror():
    model = create_model("vgg11", width=0.125, head="gap", num_classes=5).eval()
    torch.nn.init.normal_(model.head.classifier.weight, 0, 1.0)  # logits of order 1: views differ visibly
    x = torch.randn(4, 3, 32, 32)
    none = tta_probs(model, x, "none", 32)
    flip = tta_probs(model, x, "flip", 32)
    assert (none - flip).abs().max() > 1e-3
    with torch.inference_mode():
        hand = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    torch.testing.assert_close(flip, hand)
    for mode in ("flip-translate", "multicrop", "dense"):
        p = tta_probs(model, x, mode, 32)
        assert p.shape == (4, 5) and torch.allclose(p.sum(1), torch.ones(4))


def test_eval_cli_with_tta(trained_run, capsys):
    assert (
        main(
            [
                "eval",
                str(trained_run),
                "--tta",
                "flip-translate",
                "--split",
                "val",
                "--out",
                str(trained_run / "ev2"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "val split, tta flip-translate" in out and "macro avg" in out
    assert json.loads((trained_run / "ev2" / "eval-flip-translate.json").read_text())["n"] == 144
    # the command draws its pictures (the viz layer's writer, passed in by the CLI)
    for name in ("confusion.png", "predictions.png"):
        assert (trained_run / "ev2" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_pictures_decode_only_the_images_they_show(trained_run, tmp_path):
    from vgglab.viz.plots import write_eval_pictures

    inf = load_inference(trained_run, "cpu")
    data, _ = inf.load_split("test")
    asked = []

    class Counted:
        y = data.y

        def images(self, idx):
            asked.append(len(idx))
            return data.images(idx)

    probs = torch.rand(len(data), len(inf.classes)).softmax(1)
    m = evaluate_checkpoint(trained_run, split="test", out=tmp_path / "m", device="cpu")
    write_eval_pictures(m, inf, Counted(), probs, tmp_path)
    assert asked == [32] and len(data) == 360  # 16 right and 16 wrong of 360
    assert (tmp_path / "predictions.png").stat().st_size > 0


def test_the_loss_of_confidently_wrong_predictions_is_not_capped():
    """A true class 50 logits behind the winner costs 50 nats, as cross-entropy says (a clamp at
    1e-12 capped it at 27.6, and the eval loss disagreed with training's by 0.4 % on a sharp model)."""
    from vgglab.evaluate.metrics import compute_metrics

    logits = torch.tensor([[50.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 80.0]])
    labels = torch.tensor([1, 1, 0])
    m = compute_metrics(logits.softmax(1), labels, ["a", "b", "c"], topk=2)
    assert m["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)

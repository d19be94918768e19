"""Every registered backbone: logits, penultimate features, new head; ImageNet weights only from local files."""

import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ffr.backbones import BACKBONES, Preprocessing, check_pretrained, create_backbone, preprocessing
from ffr.errors import FFRError


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_gives_logits_and_features(name):
    model = create_backbone(name, n_classes=3, pretrained=None).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (2, 3) and feats.shape == (2, model.feature_dim)
    assert torch.allclose(model.head(feats), logits, atol=1e-5)  # features are exactly what the head sees
    assert sum(p.requires_grad for p in model.parameters()) == len(list(model.parameters()))  # all layers train


def test_weights_from_a_local_file_and_from_the_torchvision_cache(tmp_path, monkeypatch):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("resnet18", n_classes=4, pretrained=str(path))
    assert torch.equal(model.trunk[0].weight, source.conv1.weight)
    assert model.head.out_features == 4

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    # Never a silent random init: missing weights are one line naming the file and how to provide it
    with pytest.raises(FFRError, match=r"resnet18's ImageNet weights file resnet18-f37072fd.pth, which is not in "
                                       r"the torch hub cache .*s3:// copy of it .*pretrained=null"):
        create_backbone("resnet18", n_classes=2, pretrained="imagenet")
    with pytest.raises(FFRError, match="resnet18-f37072fd.pth"):
        check_pretrained("resnet18", "imagenet")
    cached = hub / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_backbone("resnet18", n_classes=2, pretrained="imagenet")
    assert torch.equal(model.trunk[0].weight, source.conv1.weight)
    assert check_pretrained("resnet18", "imagenet") == str(cached)
    assert check_pretrained("resnet18", str(path)) == str(path) and check_pretrained("resnet18", None) is None


def test_weights_from_an_s3_mirror(s3_bucket, tmp_path):
    source = torchvision.models.resnet18(weights=None)
    from ffr.storage import filesystem

    fs, _ = filesystem(s3_bucket)
    uri = f"{s3_bucket}/weights/resnet18-f37072fd.pth"
    torch.save(source.state_dict(), tmp_path / "w.pth")
    fs.put(str(tmp_path / "w.pth"), uri.removeprefix("s3://"))
    assert check_pretrained("resnet18", uri) == uri
    assert torch.equal(create_backbone("resnet18", 2, pretrained=uri).trunk[0].weight, source.conv1.weight)
    with pytest.raises(FFRError, match=r"pretrained weights file 's3://.*/other.pth' does not exist; .*ImageNet: "
                                       r"resnet18-f37072fd.pth"):
        check_pretrained("resnet18", f"{s3_bucket}/weights/other.pth")


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_declares_its_options(name):
    from ffr.options import Options

    assert issubclass(BACKBONES.get(name).Options, Options)
    assert BACKBONES.options(name, {}, "backbone_options").to_dict() == {} or name == "small-cnn"


def test_bad_backbone_requests_are_clear_errors(tmp_path):
    with pytest.raises(FFRError, match="unknown backbone 'vit'"):
        create_backbone("vit", 2)
    with pytest.raises(FFRError, match="does not exist"):
        create_backbone("resnet18", 2, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(FFRError, match="n_classes"):
        create_backbone("small-cnn", 1)
    with pytest.raises(FFRError, match="backbone 'small-cnn' has no ImageNet weights; expected pretrained: null"):
        create_backbone("small-cnn", 2, pretrained="imagenet")
    with pytest.raises(FFRError, match=r"unknown option 'backbone_options.depth' of backbone 'small-cnn'; "
                                       r"did you mean 'width'\?"):
        create_backbone("small-cnn", 2, depth=9)
    with pytest.raises(FFRError, match=r"option 'backbone_options.width' of backbone 'small-cnn' = 0"):
        create_backbone("small-cnn", 2, width=0)
    with pytest.raises(FFRError, match=r"unknown option 'backbone_options.width' of backbone 'resnet18'"):
        create_backbone("resnet18", 2, width=8)
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(FFRError, match="match no parameter"):
        create_backbone("resnet18", 2, pretrained=str(tmp_path / "other.pth"))


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_declares_its_preprocessing(name):
    prep = preprocessing(name)
    assert prep.input_size > 0 and len(prep.mean) == len(prep.std) == 3 and min(prep.std) > 0
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    x = prep.at(24).transform()(image)
    assert x.shape == (3, 24, 24)  # the run's image_size, whole image (no crop)
    assert Preprocessing.from_dict(prep.to_dict()) == prep  # what a checkpoint records reads back the same


# What training did before a backbone carried its preprocessing: resize (no crop) and ImageNet's normalization.
BEFORE = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@pytest.mark.parametrize("name", ["resnet50", "resnet18", "small-cnn"])
def test_shipped_backbones_keep_the_preprocessing_their_results_were_trained_with(name):
    from torchvision import transforms

    before = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(),
                                 transforms.Normalize(BEFORE["mean"], BEFORE["std"])])
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (45, 61, 3), dtype=np.uint8))
    assert torch.equal(preprocessing(name).at(32).transform()(image), before(image))
    if name.startswith("resnet"):  # read from torchvision's weights entry, not written here
        assert preprocessing(name).input_size == 224

"""attnkernels.convert: structure-recognised swaps, weights preserved, same outputs and gradients."""
import copy
import pickle

import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import nn as fnn
from attnkernels import reference as ref


class SEAttentionCopy(nn.Module):
    """A copy-pasted seed class with another name: recognised by structure."""

    def __init__(self, channel=512, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        return x * self.fc(y).view(b, c, 1, 1)


class CadeneSEModule(nn.Module):
    """pretrainedmodels' SENet SEModule: timm's legacy one plus a weightless avg_pool."""

    def __init__(self, channels, reduction):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        module_input = x
        x = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return module_input * x


class LooksLikeSEButIsNot(SEAttentionCopy):
    """Same structure, different forward: must be left alone."""

    def forward(self, x):
        return x + super().forward(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.se_seed = SEAttentionCopy(32, 8)
        self.block = nn.Sequential(
            nn.Conv2d(32, 32, 1), ref.SqueezeExcitation(32, 8, scale_activation=nn.Hardsigmoid),
            ref.SEModule(32, add_maxpool=True), ref.EfficientNetSqueezeExcite(32, act_layer=nn.SiLU),
            ref.EffectiveSEModule(32), ref.LegacySEModule(32, 4), CadeneSEModule(32, 8))
        self.impostor = LooksLikeSEButIsNot(32, 8)
        self.gelu_se = ref.SqueezeExcitation(32, 8, activation=nn.GELU)

    def forward(self, x):
        x = self.se_seed(self.stem(x))
        return self.gelu_se(self.impostor(self.block(x)))


def _assert_same_outputs_and_gradients(original, converted):
    x = torch.randn(2, 3, 9, 11)
    y0, y1 = original(x), converted(x)
    torch.testing.assert_close(y1, y0)
    y0.square().sum().backward()
    y1.square().sum().backward()
    g0 = dict(original.named_parameters())
    for name, p in converted.named_parameters():
        torch.testing.assert_close(p.grad, g0[name].grad, msg=name)


def test_convert_net_same_outputs_and_gradients():
    net = Net()
    original = copy.deepcopy(net)
    keys = {k: v.clone() for k, v in net.state_dict().items()}
    net, report = attnkernels.convert(net)
    converted = {name for name, _, _ in report.converted}
    assert converted == {"se_seed", "block.1", "block.2", "block.3", "block.4",
                         "block.5", "block.6"}, str(report)
    left = {name: why for name, _, why in report.left_alone}
    assert "output differs" in left["impostor"]
    assert "GELU" in left["gelu_se"]
    assert isinstance(net.se_seed, fnn.SELayer) and isinstance(net.block[4], fnn.EffectiveSEModule)
    assert isinstance(net.block[5], fnn.LegacySEModule) and isinstance(net.block[6], fnn.LegacySEModule)
    assert net.state_dict().keys() == keys.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in keys.items())

    _assert_same_outputs_and_gradients(original, net)


def test_convert_root_module_and_weights_are_shared():
    se = ref.SEModule(16)
    new, report = attnkernels.convert(se)
    assert isinstance(new, fnn.SEModule) and report.converted[0][0] == ""
    assert new.fc1.weight is se.fc1.weight  # adopted, not copied


def test_already_fused_modules_are_left_as_they_are():
    m = nn.Sequential(fnn.SEModule(16))
    _, report = attnkernels.convert(m)
    assert report.converted == [] and report.left_alone == []


class EcaCopy(nn.Module):
    """The seeds' eca_block pasted under another name: recognised by structure."""

    def __init__(self, channel, k=5):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


class EcaNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.blocks = nn.Sequential(
            EcaCopy(32), ref.ECABlock(32), ref.ECAAttention(3), ref.EcaModule(32),
            ref.EcaModule(kernel_size=7, gate_layer="hard_sigmoid"),
            ref.CecaModule(32, act_layer=nn.ReLU), ref.EcaModule(32, use_mlp=True))

    def forward(self, x):
        return self.blocks(self.stem(x))


def test_convert_eca_flavours_same_outputs_and_gradients():
    net = EcaNet()
    with torch.no_grad():
        for p in net.blocks.parameters():
            p.mul_(3.0)
    original = copy.deepcopy(net)
    net, report = attnkernels.convert(net)
    converted = {name: new for name, _, new in report.converted}
    assert converted == {"blocks.0": "ECALayer", "blocks.1": "ECALayer", "blocks.2": "ECAAttention",
                         "blocks.3": "EcaModule", "blocks.4": "EcaModule",
                         "blocks.5": "CecaModule"}, str(report)
    left = {name: why for name, _, why in report.left_alone}
    assert "use_mlp" in left["blocks.6"]
    assert net.blocks[5].padding == original.blocks[5].padding
    assert net.state_dict().keys() == original.state_dict().keys()

    _assert_same_outputs_and_gradients(original, net)


class PastedChannelAttention(nn.Module):
    """The seeds' channel attention pasted under another name."""

    def __init__(self, channel, ratio=8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(channel, channel // ratio, 1, bias=False), nn.ReLU(),
                                nn.Conv2d(channel // ratio, channel, 1, bias=False))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


class PastedSpatialAttention(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        pooled = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)
        return self.sigmoid(self.conv(pooled))


class PastedCbamBlock(nn.Module):
    def __init__(self, channel, ratio=8, kernel_size=7):
        super().__init__()
        self.channelattention = PastedChannelAttention(channel, ratio)
        self.spatialattention = PastedSpatialAttention(kernel_size)

    def forward(self, x):
        x = x * self.channelattention(x)
        return x * self.spatialattention(x)


class CbamImpostor(PastedCbamBlock):
    """Same structure, spatial gate applied first: must be left alone."""

    def forward(self, x):
        x = x * self.spatialattention(x)
        return x * self.channelattention(x)


class CbamNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.blocks = nn.Sequential(
            PastedCbamBlock(32), ref.cbam.CBAM(32, 4), ref.cbam.CBAMBlockFc(32, 4, 3),
            ref.cbam.OfficialCBAM(32, 4), ref.cbam.OfficialCBAM(32, 4, no_spatial=True),
            ref.cbam.CbamModule(32, mlp_bias=True), ref.cbam.LightCbamModule(32),
            ref.cbam.UltralyticsCBAM(32, 3), ref.cbam.OfficialCBAM(32, 4, pool_types=["avg", "lse"]),
            CbamImpostor(32))

    def forward(self, x):
        return self.blocks(self.stem(x))


def test_convert_cbam_flavours_same_outputs_gradients_and_running_statistics():
    net = CbamNet()
    original = copy.deepcopy(net)
    net, report = attnkernels.convert(net)
    converted = {name: new for name, _, new in report.converted}
    assert converted == {"blocks.0": "CBAMBlock", "blocks.1": "CBAM", "blocks.2": "CBAMBlockFc",
                         "blocks.3": "OfficialCBAM", "blocks.4": "OfficialCBAM",
                         "blocks.5": "CbamModule", "blocks.6": "LightCbamModule",
                         "blocks.7": "UltralyticsCBAM"}, str(report)
    left = {name: why for name, _, why in report.left_alone}
    assert "pool_types" in left["blocks.8"]
    assert "output differs" in left["blocks.9"]
    assert net.blocks[4].no_spatial
    assert net.state_dict().keys() == original.state_dict().keys()

    _assert_same_outputs_and_gradients(original, net)
    buffers = dict(original.named_buffers())
    for name, b in net.named_buffers():
        torch.testing.assert_close(b, buffers[name], msg=name)


class PastedCoordAtt(nn.Module):
    """The official CoordAtt pasted under another name (oup = inp)."""

    def __init__(self, inp, reduction=32):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = ref.coord.h_swish()
        self.conv_h = nn.Conv2d(mip, inp, kernel_size=1)
        self.conv_w = nn.Conv2d(mip, inp, kernel_size=1)

    def forward(self, x):
        _, _, h, w = x.size()
        y = torch.cat([self.pool_h(x), self.pool_w(x).permute(0, 1, 3, 2)], dim=2)
        y = self.act(self.bn1(self.conv1(y)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        return x * self.conv_w(y_w.permute(0, 1, 3, 2)).sigmoid() * self.conv_h(y_h).sigmoid()


class CoordNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.blocks = nn.Sequential(
            PastedCoordAtt(32), ref.coord.CoordAtt(32, 32, reduction=4),
            ref.coord.CoordAttGroups(32, 32), ref.coord.CA_Block(32, 9, 11, reduction=4),
            ref.coord.CoordAttn(32, has_skip=True), ref.coord.CoordAttn(32, norm_layer=nn.LayerNorm))

    def forward(self, x):
        return self.blocks[:5](self.stem(x))


def test_convert_coord_flavours_same_outputs_gradients_and_running_statistics():
    net = CoordNet()
    original = copy.deepcopy(net)
    net, report = attnkernels.convert(net)
    converted = {name: new for name, _, new in report.converted}
    assert converted == {"blocks.0": "CoordAtt", "blocks.1": "CoordAtt",
                         "blocks.2": "CoordAttGroups", "blocks.3": "CA_Block",
                         "blocks.4": "CoordAttn"}, str(report)
    left = {name: why for name, _, why in report.left_alone}
    assert "LayerNorm" in left["blocks.5"]
    assert net.blocks[4].has_skip and (net.blocks[3].h, net.blocks[3].w) == (9, 11)
    assert net.state_dict().keys() == original.state_dict().keys()

    _assert_same_outputs_and_gradients(original, net)
    buffers = dict(original.named_buffers())
    for name, b in net.named_buffers():
        torch.testing.assert_close(b, buffers[name], msg=name)


class PastedTriplet(nn.Module):
    """The seeds' TripletAttention pasted under another name, with its own gate class."""

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.compress = ref.triplet.ZPool()
            self.conv = ref.cbam.BasicConv(2, 1, 7, stride=1, padding=3, relu=False)

        def forward(self, x):
            return x * torch.sigmoid_(self.conv(self.compress(x)))

    def __init__(self, no_spatial=False):
        super().__init__()
        self.cw, self.hc = self.Gate(), self.Gate()
        self.no_spatial = no_spatial
        if not no_spatial:
            self.hw = self.Gate()

    def forward(self, x):
        return ref.triplet._triplet_forward(self.cw, self.hc,
                                            None if self.no_spatial else self.hw, x)


class TripletNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        with_relu = ref.triplet.TripletAttention()
        with_relu.hc.conv.relu = nn.ReLU()
        self.blocks = nn.Sequential(
            PastedTriplet(), ref.triplet.TripletAttention(no_spatial=True),
            ref.triplet.TripletAttention(kernel_size=3), ref.triplet.LegacyTripletAttention(16),
            ref.triplet.LegacyTripletAttention(16, no_spatial=True, kernel_size=3), with_relu)

    def forward(self, x):  # not the ReLU one: its in-place sigmoid_ breaks upstream's backward
        return self.blocks[:5](self.stem(x))


def test_convert_triplet_flavours_same_outputs_gradients_and_running_statistics():
    net = TripletNet()
    original = copy.deepcopy(net)
    net, report = attnkernels.convert(net)
    converted = {name: new for name, _, new in report.converted}
    assert converted == {"blocks.0": "TripletAttention", "blocks.1": "TripletAttention",
                         "blocks.2": "TripletAttention", "blocks.3": "LegacyTripletAttention",
                         "blocks.4": "LegacyTripletAttention"}, str(report)
    left = {name: why for name, _, why in report.left_alone}
    assert "ReLU" in left["blocks.5"]
    assert net.blocks[1].no_spatial and net.blocks[4].no_spatial
    assert net.state_dict().keys() == original.state_dict().keys()

    _assert_same_outputs_and_gradients(original, net)
    buffers = dict(original.named_buffers())
    for name, b in net.named_buffers():
        torch.testing.assert_close(b, buffers[name], msg=name)


class ECABasicBlock(nn.Module):
    """A residual block that holds an ECA module (ecanet's ECABasicBlock)."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.eca = ref.ECALayer(c, 3)

    def forward(self, x):
        return x + self.eca(self.conv(x))


class EcaMobileNet(nn.Module):
    """A whole network whose class name says ECA."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(ECABasicBlock(8), ECABasicBlock(8))
        self.odd = ECAOdd()
        self.bam = BAMBlock()


class ECAOdd(nn.Module):
    """Named like ECA, built like nothing we know."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)


class BAMBlock(nn.Module):
    """An attention kind with no fused kernel yet."""

    def forward(self, x):
        return x


def test_the_report_lists_attention_modules_left_alone_and_no_containers():
    net, report = attnkernels.convert(EcaMobileNet())
    assert {n for n, _, _ in report.converted} == {"blocks.0.eca", "blocks.1.eca"}, str(report)
    left = {name: why for name, _, why in report.left_alone}
    assert set(left) == {"odd", "bam"}, str(report)  # not the blocks, not the network
    assert "looks like ECA" in left["odd"]
    assert "a BAM module: no fused kernel for this kind yet" in left["bam"]
    root, report = attnkernels.convert(ECAOdd())
    assert [n for n, _, _ in report.left_alone] == [""]  # the root is reported as <root>


class SeedsAndCollectionsNet(nn.Module):
    """Issue 29's classes that convert once left alone: seed 001's CBAM (Linear
    MLP, each attention gating its own input), External-Attention's CBAMBlock
    (bias in the spatial conv, [max, mean], the residual), Ultralytics'
    ChannelAttention on its own; kernel sizes 7, 3 and an odd 9."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.blocks = nn.Sequential(
            ref.cbam.LinearCBAM(24, ratio=4), ref.cbam.LinearCBAM(24, 2, kernel_size=3),
            ref.cbam.ExternalCBAMBlock(24, reduction=4, kernel_size=7),
            ref.cbam.ExternalCBAMBlock(24, reduction=8, kernel_size=9),
            ref.cbam.UltralyticsChannelAttention(24))

    def forward(self, x):
        return self.blocks(self.stem(x))


def test_convert_seed_and_collection_classes_same_outputs_and_gradients():
    net = SeedsAndCollectionsNet()
    with torch.no_grad():  # gates away from 0.5: a wrong gate shows
        for p in net.blocks.parameters():
            p.mul_(3.0)
    original = copy.deepcopy(net)
    params = {n: p for n, p in net.named_parameters()}
    net, report = attnkernels.convert(net)
    converted = {name: new for name, _, new in report.converted}
    assert converted == {"blocks.0": "LinearCBAM", "blocks.1": "LinearCBAM",
                         "blocks.2": "ExternalCBAMBlock", "blocks.3": "ExternalCBAMBlock",
                         "blocks.4": "UltralyticsChannelAttention"}, str(report)
    assert not report.left_alone, str(report)
    assert all(p is params[n] for n, p in net.named_parameters())  # the very parameters
    assert net.state_dict().keys() == original.state_dict().keys()
    if attnkernels.available_backends()["cpu"] is None:
        for m in net.blocks:  # the fused kernels, not auto's reference fallback: raises if none
            m.backend = "cpu"
    _assert_same_outputs_and_gradients(original, net)


class GateCallerNet(nn.Module):
    """CBAM's halves used bare (seed 000; a wheat-disease ResNet): each returns its
    gate and the network multiplies. Nothing to swap in: reported, not converted."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.ca = ref.cbam.ChannelAttention(16, ratio=4)
        self.sa = ref.cbam.SpatialAttention(7)
        self.ca2 = ref.cbam.ExternalChannelAttention(16, reduction=4)

    def forward(self, x):
        out = self.stem(x)
        out = self.ca(out) * out
        return self.sa(out) * out * self.ca2(out)


def test_bare_cbam_gates_are_reported_with_the_reason():
    net, report = attnkernels.convert(GateCallerNet())
    assert not report.converted, str(report)
    left = {name: why for name, _, why in report.left_alone}
    assert set(left) == {"ca", "sa", "ca2"}, str(report)
    assert "a CBAM channel gate on its own" in left["ca"] and "x * gate" in left["ca"]
    assert "a CBAM spatial gate on its own" in left["sa"]
    assert "a CBAM channel gate on its own" in left["ca2"]


class TaggedLayers(nn.Module):
    """Runs its layers by the tags on each, as ultralytics' models do (``f``: the
    index of the layer its input comes from, -1 the previous one; ``i``: its own)."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 16, 1), ref.SEModule(16), nn.Conv2d(16, 16, 1))
        for i, m in enumerate(self.model):
            m.i, m.f, m.type, m.np = i, -1 if i != 2 else 1, type(m).__name__, 0

    def forward(self, x):
        outputs = []
        for m in self.model:
            x = m(x if m.f == -1 else outputs[m.f])
            outputs.append(x)
        return x


def test_convert_carries_instance_attributes_and_hooks():
    net = TaggedLayers()
    original = copy.deepcopy(net)
    se = net.model[1]
    calls = []
    pre = se.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    se.register_forward_hook(lambda m, args, out: calls.append("forward"))
    se.register_full_backward_hook(lambda m, grad_in, grad_out: calls.append("backward"))
    net, report = attnkernels.convert(net)
    fused = net.model[1]
    assert isinstance(fused, fnn.SEModule), str(report)
    assert (fused.i, fused.f, fused.type, fused.np) == (1, -1, "SEModule", 0)
    assert calls == []  # the probe never runs the user's hooks
    x = torch.randn(2, 3, 5, 4)
    _assert_same_outputs_and_gradients(original, net)
    assert calls == ["pre", "forward", "backward"]
    pre.remove()  # a handle taken before the conversion still removes its hook
    calls.clear()
    net(x)
    assert calls == ["forward"]


def test_hooks_on_submodules_leave_the_module_alone():
    se = ref.SEModule(16)
    se.fc1.register_forward_hook(lambda m, args, out: None)
    _, report = attnkernels.convert(nn.Sequential(se))
    assert report.converted == [] and len(report.left_alone) == 1, str(report)
    assert "submodule 'fc1' has forward or backward hooks" in report.left_alone[0][2]


def test_revert_restores_the_original_instances_with_the_trained_parameters():
    timm = pytest.importorskip("timm")
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), timm.layers.SEModule(16),
                        nn.Sequential(timm.layers.cbam.CbamModule(16), timm.layers.EcaModule(16)))
    net[1].f = -1  # a framework's tag
    net[2][0].channel.fc1.eval()  # a child's own mode survives both ways
    originals = [net[1], net[2][0], net[2][1]]
    x = torch.randn(2, 3, 6, 5)
    net, report = attnkernels.convert(net)
    assert len(report.converted) == 3, str(report)
    assert not net[2][0].channel.fc1.training
    net(x).square().sum().backward()  # train the converted model one step
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.1 * p.grad
    net.eval()
    y = net(x)
    net, report = attnkernels.revert(net)
    assert [m for m in (net[1], net[2][0], net[2][1])] == originals, str(report)
    assert report.verb == "reverted" and len(report.converted) == 3 and not report.left_alone
    assert not any(m.training for m in originals) and net[1].f == -1
    torch.testing.assert_close(net(x), y)  # the upstream forward, on the trained parameters
    assert b"attnkernels" not in pickle.dumps(net)  # loads without attnkernels
    y0 = net(x)
    round_trip, _ = attnkernels.revert(attnkernels.convert(net)[0])
    assert torch.equal(round_trip(x), y0)
    _, report = attnkernels.revert(nn.Sequential(fnn.SEModule(16)))
    assert report.converted == [] and "built fused, not by convert" in report.left_alone[0][2]


# Seed 001's classes that hold attention modules rather than being one (as the
# seed writes them, its SENet / ECANet / CBAM inside); not published modules.
class _Seed001SENet(nn.Module):
    def __init__(self, channel, ratio=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // ratio, bias=False), nn.ReLU(),
                                nn.Linear(channel // ratio, channel, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1).expand_as(x)


class _Seed001ECANet(nn.Module):
    def __init__(self, channel, gamma=2, b=1):
        super().__init__()
        import math
        k = int(abs((math.log(channel, 2) + b) / gamma))
        k = k if k % 2 else k + 1
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.conv(self.avg_pool(x).view(b, 1, c))
        return x * self.sigmoid(y.view(b, c, 1, 1)).expand_as(x)


class DynamicAttentionSelector(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.attention_pool = nn.ModuleDict({"se": _Seed001SENet(channel),
                                             "eca": _Seed001ECANet(channel),
                                             "none": nn.Identity()})
        self.selector = nn.Linear(channel, 3)
        self.attention_types = ["se", "eca", "none"]

    def forward(self, x):
        gate = torch.softmax(self.selector(x.mean(dim=(2, 3))), dim=1)
        out = 0
        for i, kind in enumerate(self.attention_types):
            out = out + gate[:, i].view(-1, 1, 1, 1) * self.attention_pool[kind](x)
        return out


class FPNAttention(nn.Module):
    def __init__(self, in_channels_list):
        super().__init__()
        self.attention_modules = nn.ModuleList(_Seed001SENet(c) for c in in_channels_list)

    def forward(self, features):
        return [attn(f) for attn, f in zip(self.attention_modules, features)]


class HybridAttention(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                     nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False),
                                     nn.Sigmoid())
        self.spatial = nn.Sequential(nn.Conv2d(channel, channel // 16, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(channel // 16, 1, 3, padding=1), nn.Sigmoid())


def test_seed001_containers_convert_inside_and_are_named_so():
    """Seed 001's DynamicAttentionSelector and FPNAttention hold known modules:
    convert swaps those (the output unchanged) and names the holder a
    container; HybridAttention holds none and is reported left alone."""
    torch.manual_seed(0)
    selector = DynamicAttentionSelector(32).eval()
    x = torch.randn(2, 32, 5, 6)
    y = selector(x)
    fused, report = attnkernels.convert(selector)
    assert [c[1] for c in report.converted] == ["_Seed001SENet", "_Seed001ECANet"]
    assert report.containers == [("", "DynamicAttentionSelector", 2)] and not report.left_alone
    assert "container  <root>: DynamicAttentionSelector" in str(report)
    torch.testing.assert_close(fused(x), y)
    fpn = nn.Sequential(FPNAttention([16, 32]))
    _, report = attnkernels.convert(fpn)
    assert report.containers == [("0", "FPNAttention", 2)] and len(report.converted) == 2
    _, report = attnkernels.convert(HybridAttention(32))
    assert not report.containers and report.left_alone[0][1] == "HybridAttention"

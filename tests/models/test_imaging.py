import torch

from pipeline.models.imaging import Geometry, from_model_space, straight_through_clamps


def test_straight_through_clamps_change_gradients_not_values():
    decoded = torch.tensor([[[[-1.5, 0.0], [0.5, 1.5]]]]).expand(1, 3, 2, 2).clone().requires_grad_(True)
    geometry = Geometry((2, 2), (2, 2), padded=True)
    (plain,) = torch.autograd.grad(from_model_space(decoded, geometry).sum(), decoded)
    with straight_through_clamps():
        images = from_model_space(decoded, geometry)
        (passed,) = torch.autograd.grad(images.sum(), decoded)
    torch.testing.assert_close(images, from_model_space(decoded, geometry))  # the same pixels
    assert plain[0, 0, 0, 0] == 0 and plain[0, 0, 1, 1] == 0  # the clamp hides the saturated pixels from the attacker
    assert torch.all(passed == 0.5)  # the identity through the clamp: d/dx (x + 1) / 2
    (after,) = torch.autograd.grad(from_model_space(decoded, geometry).sum(), decoded)
    torch.testing.assert_close(after, plain)  # only inside the context

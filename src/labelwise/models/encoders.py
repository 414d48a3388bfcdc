"""The :class:`Backbone` interface of the pretraining encoders (``features``, ``embed``, ``stride``, masked image
modelling) and the transformer encoders, MONAI's ViT (:class:`ViTBackbone`) and Swin transformer
(:class:`SwinBackbone`), which are also the bodies of the ``vit`` and ``swin`` classifiers of
:mod:`labelwise.models.networks`. :mod:`labelwise.models.backbones` adds the CNN encoders and the registry."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from labelwise.errors import ConfigError, DataError
from labelwise.models.config import ModelConfig

__all__ = ["Backbone", "SwinBackbone", "ViTBackbone", "masked_input", "swin_options"]


class Backbone(nn.Module):
    """Shared part: ``embed`` is the global average of the last feature map; ``forward`` is ``embed``, followed by
    ``head`` when the network has one (a classifier)."""

    dim: int  # channels of the last feature map = size of the embedding
    stride: int  # how much smaller the last feature map is than the input
    token_patch: int = 1  # masked image modelling: a mask hides whole patches of this side (CNNs: any pixel)
    masks_tokens = False  # masked image modelling replaces tokens (transformers), not input pixels (CNNs)
    in_channels: int

    @property
    def mask_dim(self) -> int:
        """Size of the learned value that replaces masked inputs (CNNs: one per input channel)."""
        return self.in_channels

    def features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def masked_features(self, x: Tensor, mask: Tensor, token: Tensor) -> list[Tensor]:
        """``features`` of ``x`` with the pixels where ``mask`` ``(B, 1, *spatial)`` is 1 hidden behind ``token``."""
        return self.features(masked_input(x, mask, token))

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x)[-1].flatten(2).mean(2)

    def forward(self, x: Tensor) -> Tensor:
        z = self.embed(x)
        head = self._modules.get("head")
        return head(z) if head is not None else z


class _TokenMasking:
    """Masked image modelling for transformers: the mask, taken at the token grid, swaps tokens for ``token``."""

    masks_tokens = True
    token_patch: int
    token_dim: int  # width of the tokens a mask replaces (after the patch embedding)

    @property
    def mask_dim(self) -> int:
        return self.token_dim

    def grid_mask(self, mask: Tensor) -> Tensor:
        """``(B, 1, *grid)`` boolean: the tokens whose patch ``mask`` hides (``mask`` is constant on each patch)."""
        p = self.token_patch
        return mask[(slice(None), slice(None)) + (slice(None, None, p),) * (mask.ndim - 2)].bool()


class ViTBackbone(_TokenMasking, Backbone):
    """MONAI's ViT without a class token (as UNETR builds it, attribute ``vit``, so its weights start a UNETR):
    ``features`` is the last block's tokens after the final layer norm as a map ``(B, hidden, *grid)``, ``embed``
    their mean. Options: ``channels: [hidden]`` (768), ``layers: [blocks]`` (12), ``heads: [heads]`` (12), MLP 4 x
    hidden, ``patch_size`` (16), ``image_size`` (default: the data's), ``dropout``."""

    def __init__(
        self,
        cfg: ModelConfig,
        spatial_dims: int,
        in_channels: int,
        image_size: tuple[int, ...] | None = None,
        unetr: bool = False,
    ):
        super().__init__()
        from monai.networks.nets import ViT

        hidden = _single(cfg, "channels", 768, "hidden size") if not unetr else (cfg.channels or [768])[0]
        layers = _single(cfg, "layers", 12, "number of blocks") if not unetr else 12
        heads = _single(cfg, "heads", 12, "attention heads")
        patch = (cfg.patch_size or 16) if not unetr else 16
        if unetr and ((cfg.layers and cfg.layers != [12]) or cfg.patch_size not in (None, 16)):
            raise ConfigError(
                "model: unetr's ViT (MONAI) has 12 blocks and 16-pixel patches; leave model.layers and "
                "model.patch_size unset"
            )
        if hidden % heads:
            raise ConfigError(f"model.heads: the hidden size {hidden} must be divisible by the heads {heads}")
        size = tuple(cfg.image_size or image_size or ())
        if len(size) != spatial_dims or any(n % patch for n in size):
            raise ConfigError(
                f"model.image_size: {cfg.name} needs the input size ({spatial_dims} values, each a "
                f"multiple of the patch size {patch}); got {list(size) or 'none'}"
            )
        self.vit = ViT(
            in_channels,
            img_size=size,
            patch_size=patch,
            hidden_size=hidden,
            mlp_dim=4 * hidden,
            num_layers=layers,
            num_heads=heads,
            proj_type="conv",
            classification=False,
            dropout_rate=cfg.dropout,
            spatial_dims=spatial_dims,
            qkv_bias=False,
        )
        self.spatial_dims, self.in_channels, self.image_size = spatial_dims, in_channels, size
        self.dim, self.stride, self.token_patch, self.token_dim = hidden, patch, patch, hidden
        self.grid = tuple(n // patch for n in size)
        # what Grad-CAM explains by default: the last block's tokens as a map (its output is a token sequence)
        self.cam_layer = f"vit.blocks.{len(self.vit.blocks) - 1}"

    def tokens(self, x: Tensor, mask: Tensor | None = None, token: Tensor | None = None) -> Tensor:
        """``(B, N, hidden)`` output tokens, the masked ones (``mask``) entering as ``token``."""
        if tuple(x.shape[2:]) != self.image_size:
            raise DataError(
                f"model {self.vit.__class__.__name__}: built for {list(self.image_size)} inputs (its "
                f"position embeddings), got {list(x.shape[2:])}; set model.image_size or resize the data"
            )
        embedding = self.vit.patch_embedding
        t = embedding.patch_embeddings(x).flatten(2).transpose(1, 2)
        if mask is not None:
            assert token is not None  # masked tokens are replaced by token
            t = torch.where(self.grid_mask(mask).flatten(1)[..., None], token.to(t.dtype), t)
        t = embedding.dropout(t + embedding.position_embeddings)
        for block in self.vit.blocks:
            t = block(t)
        return self.vit.norm(t)

    def _map(self, t: Tensor) -> Tensor:
        return t.transpose(1, 2).reshape(t.shape[0], self.dim, *self.grid)

    def cam_reshape(self, tokens: Tensor) -> Tensor:
        """Tokens ``(B, N, hidden)`` of a block as the patch grid ``(B, hidden, *grid)`` (for Grad-CAM)."""
        return self._map(tokens)

    def features(self, x: Tensor) -> list[Tensor]:
        return [self._map(self.tokens(x))]

    def masked_features(self, x: Tensor, mask: Tensor, token: Tensor) -> list[Tensor]:
        return [self._map(self.tokens(x, mask, token))]

    def embed(self, x: Tensor) -> Tensor:
        return self.tokens(x).mean(1)


class SwinBackbone(_TokenMasking, Backbone):
    """MONAI's Swin transformer built as SwinUNETR builds it (attribute ``swinViT``, so its weights start a
    SwinUNETR): ``features`` are the four stages' maps (layer-normalised, strides 2p, 4p, 8p, 16p for patch side p),
    ``embed`` the mean of the last. Options: ``channels: [embedding width]`` (24, SwinUNETR's feature_size),
    ``layers`` (blocks per stage, [2, 2, 2, 2]), ``heads`` ([3, 6, 12, 24]), ``patch_size`` (2); windows of 7."""

    def __init__(
        self, cfg: ModelConfig, spatial_dims: int, in_channels: int, image_size: tuple[int, ...] | None = None
    ):
        super().__init__()
        from monai.networks.nets.swin_unetr import MERGING_MODE, SwinTransformer

        width, depths, heads, patch = swin_options(cfg)
        self.swinViT = SwinTransformer(
            in_chans=in_channels,
            embed_dim=width,
            window_size=(7,) * spatial_dims,
            patch_size=(patch,) * spatial_dims,
            depths=depths,
            num_heads=heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            drop_rate=cfg.dropout,
            attn_drop_rate=0.0,
            drop_path_rate=0.0,
            norm_layer=nn.LayerNorm,
            patch_norm=False,
            use_checkpoint=False,
            spatial_dims=spatial_dims,
            downsample=MERGING_MODE["merging"],
            use_v2=False,
        )
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.dim, self.stride, self.token_patch, self.token_dim = width * 16, patch * 16, patch, width
        # what Grad-CAM explains by default: a stage's output (channel-first; the modules inside a stage work
        # channels-last, so the generic "last spatial layer" would pick a wrong one), the deepest whose map has more
        # than one position at the data's size
        grids = [min(image_size) // (patch * 2 ** (k + 1)) for k in range(4)] if image_size else [2] * 4
        self.cam_layer = f"swinViT.layers{max((k for k, g in enumerate(grids) if g > 1), default=0) + 1}.0"
        self.cam_reshape = None

    def _stages(self, x0: Tensor) -> list[Tensor]:
        swin, maps = self.swinViT, []
        x = swin.pos_drop(x0)
        for stage in (swin.layers1, swin.layers2, swin.layers3, swin.layers4):
            x = stage[0](x.contiguous())
            maps.append(swin.proj_out(x, True))
        return maps

    def features(self, x: Tensor) -> list[Tensor]:
        return self._stages(self.swinViT.patch_embed(x))

    def masked_features(self, x: Tensor, mask: Tensor, token: Tensor) -> list[Tensor]:
        x0 = self.swinViT.patch_embed(x)
        shape = (1, -1) + (1,) * (x0.ndim - 2)
        return self._stages(torch.where(self.grid_mask(mask), token.view(shape).to(x0.dtype), x0))


def swin_options(cfg: ModelConfig) -> tuple[int, list[int], list[int], int]:
    """Embedding width, blocks per stage, heads per stage and patch side of a Swin model (SwinUNETR's defaults)."""
    width = _single(cfg, "channels", 24, "embedding width (SwinUNETR's feature_size)")
    depths, heads = cfg.layers or [2, 2, 2, 2], cfg.heads or [3, 6, 12, 24]
    if len(depths) != 4 or len(heads) != 4:
        raise ConfigError("model.layers and model.heads: a Swin transformer (MONAI) has 4 stages: give 4 values each")
    bad = [h for i, h in enumerate(heads) if (width * 2**i) % h]
    if bad:
        raise ConfigError(
            f"model.heads: stage widths {[width * 2**i for i in range(4)]} must be divisible by the heads {heads}"
        )
    return width, depths, heads, cfg.patch_size or 2


def _single(cfg: ModelConfig, key: str, default: int, what: str) -> int:
    values = getattr(cfg, key)
    if values is None:
        return default
    if len(values) != 1:
        raise ConfigError(f"model.{key}: {cfg.name} takes one value (the {what}), got {values}")
    return values[0]


def masked_input(x: Tensor, mask: Tensor, fill: Tensor) -> Tensor:
    """``x`` with the pixels where ``mask`` (B, 1, *spatial) is 1 replaced by ``fill`` (C,) per channel."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return torch.where(mask.bool(), fill.view(shape).to(x.dtype), x)

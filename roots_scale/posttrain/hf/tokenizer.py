"""Our sentencepiece model as a Hugging Face `tokenizers` tokenizer: the same ids, no sentencepiece needed to load.

The tokenizer `roots-data train-tokenizer` writes is lossless: identity normalization, no dummy prefix, no
whitespace folding, spaces written as "▁", byte fallback for characters outside the vocabulary. That maps
onto `tokenizers` exactly: a `Replace(" ", "▁")` normalizer, no pre-tokenizer, and the same model (BPE with
merges ordered as sentencepiece ranks its pieces, or Unigram with the same scores), byte fallback on.
The special pieces (pad 0, unk 1, end-of-document 2 as eos, mask 3, cls 4, sep 5) are special tokens. As
in every HF tokenizer they are matched in raw text: "<mask>", "<cls>", "<sep>" (sentencepiece's
user-defined pieces) encode the same either way, while a literal "</s>", "<pad>" or "<unk>" in the text
becomes the special token here and is spelled out by sentencepiece. The BERT tokenizer frames its input as
our BERT samples are framed: `<cls> A <sep>` and `<cls> A <sep> B <sep>` (B with token type 1).
"""

from __future__ import annotations

from pathlib import Path

from sentencepiece.sentencepiece_model_pb2 import ModelProto

from roots_core.tokenizer import model_proto, read_model_bytes
from roots_scale.posttrain.errors import HFConversionError
from roots_scale.posttrain.hf.convert import BERT, Family

NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4  # sentencepiece piece types
UNIGRAM, BPE = 1, 2  # sentencepiece model types
SPECIAL_NAMES = {"pad": "pad_token", "unk": "unk_token", "eod": "eos_token", "mask": "mask_token",
                 "cls": "cls_token", "sep": "sep_token"}


def _proto(path: Path) -> ModelProto:
    """The sentencepiece model at `path`, checked to be one whose encoding `tokenizers` reproduces."""
    proto = model_proto(read_model_bytes(path))
    spec, trainer = proto.normalizer_spec, proto.trainer_spec
    lossless = (spec.name == "identity" and not spec.add_dummy_prefix and not spec.remove_extra_whitespaces
                and spec.escape_whitespaces and trainer.byte_fallback)
    if not lossless or trainer.model_type not in (BPE, UNIGRAM):
        raise HFConversionError(
            f"{path} is not a tokenizer of `roots-data train-tokenizer` (normalizer {spec.name!r}, dummy prefix "
            f"{spec.add_dummy_prefix}, byte fallback {trainer.byte_fallback}, model type {trainer.model_type}); "
            f"only lossless BPE/Unigram sentencepiece models convert exactly")
    return proto


def _bpe_merges(pieces: list[str], normal: set[str]) -> list[tuple[str, str]]:
    """Every (left, right) whose join is a piece, in sentencepiece's order: the joined piece's id, lowest first."""
    rank = {piece: index for index, piece in enumerate(pieces)}
    merges = [(rank[piece], rank[piece[:cut]], piece[:cut], piece[cut:])
              for piece in normal for cut in range(1, len(piece))
              if piece[:cut] in normal and piece[cut:] in normal]
    return [(left, right) for _, _, left, right in sorted(merges)]


def build_tokenizer(spm_model: Path, family: Family, special_tokens: dict[str, int], max_length: int):
    """A `PreTrainedTokenizerFast` giving the ids of the sentencepiece model at `spm_model`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    proto = _proto(spm_model)
    pieces = [piece.piece for piece in proto.pieces]
    unk = proto.trainer_spec.unk_id
    if proto.trainer_spec.model_type == BPE:
        normal = {piece.piece for piece in proto.pieces if piece.type == NORMAL}
        model = models.BPE(vocab={piece: index for index, piece in enumerate(pieces)},
                           merges=_bpe_merges(pieces, normal), unk_token=pieces[unk], fuse_unk=True,
                           byte_fallback=True)
    else:
        model = models.Unigram([(piece.piece, piece.score) for piece in proto.pieces], unk_id=unk,
                               byte_fallback=True)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(piece.piece, special=True, normalized=False)
                                  for piece in proto.pieces if piece.type in (UNKNOWN, CONTROL, USER_DEFINED)])
    names = {SPECIAL_NAMES[name]: pieces[index] for name, index in special_tokens.items()}
    inputs = ["input_ids", "attention_mask"]
    if family is BERT:
        inputs.insert(1, "token_type_ids")
        cls, sep = names["cls_token"], names["sep_token"]
        ids = [(cls, special_tokens["cls"]), (sep, special_tokens["sep"])]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1", special_tokens=ids)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length,
                                   clean_up_tokenization_spaces=False, model_input_names=inputs, **names)

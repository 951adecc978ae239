"""Load an exported child (``magic-export``) like a pre-trained fairseq RoBERTa.

    from fairseq_magic.hub import from_pretrained

    hub = from_pretrained("exports/child")      # the folder magic-export wrote
    hub.eval()
    tokens = hub.encode("the king spake unto israel .")   # <s> pieces </s>
    hub.decode(tokens)                                    # the text again
    features = hub.extract_features(tokens)               # (1, T, hidden)
    layers = hub.extract_features(tokens, return_all_hiddens=True)
    # a list: every layer's output, (1, T, hidden) each
    hub.fill_mask("the king spake unto <mask> .", topk=3)
    # [(filled sentence, probability, predicted piece), ...], best first

    # classification after fine-tuning with fairseq's sentence_prediction task:
    hub = from_pretrained("checkpoints/cls", checkpoint_file="checkpoint_best.pt",
                          data_name_or_path="/path/to/cls-bin/input0")
    log_probs = hub.predict("sentence_classification_head", tokens)

``hub`` is fairseq's ``RobertaHubInterface``: ``hub.model`` is the
``MagicChildModel``, ``hub.task`` the masked_lm task (its dictionary is the
folder's ``dict.txt`` plus ``<mask>``). ``encode``, ``decode`` and
``fill_mask`` take raw text through the folder's sentencepiece model
(``spm.model`` or ``sentencepiece.bpe.model``): magic-export copies the one
beside the super-net's data-bin (as scripts/prepare_corpus.py lays it out) or
the one given with ``--spm``. Without it the hub has no BPE and takes
dictionary indices only (``hub.task.source_dictionary.encode_line``).
``hub.predict`` needs a classification head, so it works on a fine-tuned
checkpoint, not on a fresh export.
"""

import os

from .cli.export import SPM_FILES  # the names magic-export writes and finds
from .evaluation import import_plugin


def from_pretrained(model_dir, checkpoint_file="model.pt", data_name_or_path=".",
                    **kwargs):
    """A ``fairseq.models.roberta.hub_interface.RobertaHubInterface`` around the
    model in ``model_dir/checkpoint_file``. ``data_name_or_path`` is the folder
    holding ``dict.txt`` (relative paths starting with '.' are taken from
    ``model_dir``); other keyword arguments override checkpoint config values, as
    in fairseq's ``from_pretrained``."""
    import_plugin()
    from fairseq import hub_utils
    from fairseq.models.roberta.hub_interface import RobertaHubInterface

    if "bpe" not in kwargs:
        spm = next((os.path.join(model_dir, f) for f in SPM_FILES
                    if os.path.isfile(os.path.join(model_dir, f))), None)
        if spm is not None:
            kwargs.update(bpe="sentencepiece", sentencepiece_model=spm)
        else:
            kwargs["bpe"] = None
    kwargs.setdefault("load_checkpoint_heads", True)  # keep fine-tuned heads
    x = hub_utils.from_pretrained(model_dir, checkpoint_file, data_name_or_path,
                                  **kwargs)
    return RobertaHubInterface(x["args"], x["task"], x["models"][0])

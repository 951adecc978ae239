"""Small helpers shared by the task, the criterion and the evaluation code.

They live here, below all three, so that none of those modules has to import
another just for them (the task imports evaluation lazily, evaluation needs
the MLM loss, the criterion needs ``unwrap_model``: putting either helper in
one of them made an import circle).
"""

import torch.nn.functional as F


def unwrap_model(model):
    """The bare fairseq model under DDP / proxy wrappers. Set state on this: the
    DDP wrapper forwards attribute reads, not assignments."""
    while hasattr(model, "module"):
        model = model.module
    return model


def mlm_loss(model, sample, padding_idx, return_all_hiddens=False):
    """Summed MLM cross-entropy (nats), the number of masked tokens, and the
    model's extra dict (``inner_states`` when ``return_all_hiddens``)."""
    masked_tokens = sample["target"].ne(padding_idx)
    sample_size = int(masked_tokens.sum())
    if sample_size == 0:
        # Rare (tiny batches): project every token so the graph still has a loss.
        masked_tokens = None
    logits, extra = model(**sample["net_input"], masked_tokens=masked_tokens,
                          return_all_hiddens=return_all_hiddens)
    targets = sample["target"]
    if masked_tokens is not None:
        targets = targets[masked_tokens]
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1),
                           reduction="sum", ignore_index=padding_idx)
    return loss, sample_size, extra

"""The semantic cache offline: evaluation on labelled pairs, and the verifier's training."""

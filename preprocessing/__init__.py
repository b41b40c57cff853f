"""Corpus to pre-masked WebDataset shards: pure algorithm modules and the Beam job that runs them."""

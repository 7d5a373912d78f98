"""The verifier: a cross-encoder that reads a question and a cached question together (modelcache_train/cross_encoder.py
trains it) and gives the probability that the cached answer serves the question. The core asks it only about
candidates whose similarity falls in the model's uncertain band (decide.py); above the band the cosine serves
alone, below it nothing does.
"""

from .model import Verifier, VerifierOptions, load_verifier
from .pool import VerifierPool

__all__ = ["Verifier", "VerifierOptions", "VerifierPool", "load_verifier"]

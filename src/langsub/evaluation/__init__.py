"""Stage 4, evaluation: perplexity outside the training loop, and benchmarks through lm-eval."""

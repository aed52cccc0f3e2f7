"""The clip the paper's method works on, defined once and read by everything (models, stages,
metrics, commands): 4 given frames, 12 predicted, 16 in all."""

GIVEN_FRAMES = 4  # the paper conditions on 4 frames ...
PREDICTED_FRAMES = 12  # ... and predicts the next 12
CLIP_FRAMES = GIVEN_FRAMES + PREDICTED_FRAMES  # the default ingest.clip_len; the VQ-VAE's time axis

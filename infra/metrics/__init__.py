"""Evaluation metrics, in one place: reconstruction quality and code use (reconstruction.py:
PSNR, SSIM, perplexity, code histograms), FID through torch-fidelity with offline Inception
weights (fid_score.py), LPIPS (lpips_score.py) and the MNIST digit classifier that judges samples
(digit_classifier.py)."""

"""The difficulty router: training, evaluation and calibration of the classifier head."""

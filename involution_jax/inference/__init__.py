"""Using a trained model: prediction, export, kernel pictures and text generation.

predictor     `Predictor`: a model with its weights and input preparation, ready to predict
export        one `jax.export` artifact with the weights inside, and its settings
kernels       the kernels involution generates for an image, captured and drawn
drawing       masks and boxes drawn on images
generation    text from a trained language model, piece by piece
"""

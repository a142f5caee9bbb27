"""Small data files shipped inside graphm, so that the training demos need no network.

``digits.csv.gz``
    The 8x8 handwritten digits: 1797 images, 64 integer pixels in 0..16 then the label 0..9 per
    comma-separated line. It is the test set of the UCI Machine Learning Repository's "Optical
    Recognition of Handwritten Digits" (E. Alpaydin and C. Kaynak, 1998;
    doi:10.24432/C50P49), licensed under Creative Commons Attribution 4.0 (CC BY 4.0), in the
    form scikit-learn ships it as ``sklearn/datasets/data/digits.csv.gz`` (copied byte for byte
    from scikit-learn 1.9.1; SHA-256 below, checked when the file is read).
    Each image was made from a 32x32 bitmap of a digit written on a form by one of 43 people;
    the bitmap was cut into 4x4 blocks and each pixel counts the "on" bits of its block.

Read them with :func:`graphm.data.load_digits`, not directly.
"""

DIGITS_FILE = "digits.csv.gz"
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"

"""Import the package before any test imports aesara, so the whole session uses its BLAS choice."""
import dltutorials_is  # noqa: F401

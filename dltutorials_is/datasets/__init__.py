"""Data sets in the original tutorials' formats (imdb.pkl pairs, piano-rolls)."""

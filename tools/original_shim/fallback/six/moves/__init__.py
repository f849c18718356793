"""`six.moves` names used by the tutorials: cPickle, xrange, urllib."""
import pickle as cPickle
import sys
import urllib  # noqa: F401
import urllib.request  # noqa: F401

xrange = range
sys.modules[__name__ + ".cPickle"] = cPickle  # makes `import six.moves.cPickle as pickle` work

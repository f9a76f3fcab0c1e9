"""Video models behind one small protocol; each is loaded once per process and kept warm."""

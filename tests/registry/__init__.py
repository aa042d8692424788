"""The registry's parts on their own: package blob stores."""

"""Built-in plugin: classic synthetic test functions at any dimension."""

__attribute__((noipa)) int plugin_fn(int x) { return x * 7 + 3; }

/* placeholder */ typedef int placeholder_toml;

/* placeholder */ typedef int placeholder_sources;

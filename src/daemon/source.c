/* placeholder */ typedef int placeholder_source;

/* placeholder */ typedef int placeholder_upstream_io;

/* placeholder */ typedef int placeholder_keyset;

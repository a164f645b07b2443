/* placeholder */ typedef int placeholder_net;

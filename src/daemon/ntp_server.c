/* placeholder */ typedef int placeholder_ntp_server;

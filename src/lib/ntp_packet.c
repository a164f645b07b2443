/* placeholder */ typedef int placeholder_ntp_packet;

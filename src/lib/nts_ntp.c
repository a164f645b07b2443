/* placeholder */ typedef int placeholder_nts_ntp;

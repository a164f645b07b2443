/* placeholder */ typedef int placeholder_status;

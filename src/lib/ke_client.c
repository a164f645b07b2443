/* placeholder */ typedef int placeholder_ke_client;

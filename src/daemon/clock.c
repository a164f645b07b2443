/* placeholder */ typedef int placeholder_clock;

#!/usr/bin/perl
# make-geoip-db.pl [--type TYPE] [--no-alias] [--numeric-codes] OUT.mmdb
#
# Writes a tiny MaxMind DB shaped like GeoLite2-Country (ip_version 6, record size 24) for the
# geo unit tests, so no binary database is committed. The networks are documentation ranges:
#
#   192.0.2.0/24        DE / EU
#   198.51.100.0/24     US / NA
#   2001:db8:1::/48     JP / AS
#   203.0.113.0/27      FR, no continent
#   203.0.113.32/27     no country, OC
#   203.0.113.64/27     "D E" (a space) / EU
#   203.0.113.96/27     a 64-byte iso_code / "" (empty)
#   203.0.113.128/27    "D\0" (a NUL) / non-ASCII
#   2001:db8:2::/48     a 63-byte iso_code (the longest accepted) / "Eu.Test_1-2"
#
# and nothing else (203.0.113.160 and up, 2001:db8:3:: are unknown).
#
# --type TYPE       the metadata's database_type (default "GeoLite2-Country")
# --no-alias        leave out the ::ffff:0:0/96 alias of the IPv4 tree, so only a reader that
#                   looks IPv4 addresses up as IPv4 finds them
# --numeric-codes   store iso_code and code as uint32 (276, 150 ...): a file of the wrong shape
#
# Uses MaxMind::DB::Writer::Tree (Debian package libmaxmind-db-writer-perl).
use strict;
use warnings;

use Getopt::Long qw(GetOptions);
use MaxMind::DB::Writer::Tree;

my $type = 'GeoLite2-Country';
my $alias = 1;
my $numeric = 0;
GetOptions(
	'type=s' => \$type,
	'alias!' => \$alias,
	'numeric-codes' => \$numeric,
) && @ARGV == 1 or die "usage: $0 [--type TYPE] [--no-alias] [--numeric-codes] OUT.mmdb\n";
my $out = $ARGV[0];

my %types = (
	country => 'map',
	continent => 'map',
	iso_code => $numeric ? 'uint32' : 'utf8_string',
	code => $numeric ? 'uint32' : 'utf8_string',
);

my $tree = MaxMind::DB::Writer::Tree->new(
	ip_version => 6,
	record_size => 24,
	database_type => $type,
	languages => ['en'],
	description => { en => 'ntspool geo unit test database' },
	alias_ipv6_to_ipv4 => $alias,
	# The test networks are all documentation ranges, which the writer drops by default.
	remove_reserved_networks => 0,
	map_key_type_callback => sub { $types{ $_[0] } or die "no type for key $_[0]\n" },
);
# A fixed build time, so two runs write the same bytes.
$tree->_set_build_epoch(1767225600);

# [network, country iso_code or undef, continent code or undef, numeric forms]
my @networks = (
	[ '192.0.2.0/24',     'DE',       'EU',          276, 150 ],
	[ '198.51.100.0/24',  'US',       'NA',          840, 19 ],
	[ '2001:db8:1::/48',  'JP',       'AS',          392, 142 ],
	[ '203.0.113.0/27',   'FR',       undef,         250, undef ],
	[ '203.0.113.32/27',  undef,      'OC',          undef, 9 ],
	[ '203.0.113.64/27',  'D E',      'EU',          1, 2 ],
	[ '203.0.113.96/27',  'X' x 64,   '',            3, 4 ],
	[ '203.0.113.128/27', "D\0",      "\x{e4}u",     5, 6 ],
	[ '2001:db8:2::/48',  'Y' x 63,   'Eu.Test_1-2', 7, 8 ],
);

for my $n (@networks) {
	my ($net, $iso, $cont, $iso_num, $cont_num) = @$n;
	my %data;
	my $i = $numeric ? $iso_num : $iso;
	my $c = $numeric ? $cont_num : $cont;
	$data{country} = { iso_code => $i } if defined $i;
	$data{continent} = { code => $c } if defined $c;
	$tree->insert_network($net, \%data);
}

open my $fh, '>:raw', $out or die "$out: $!\n";
$tree->write_tree($fh);
close $fh or die "$out: $!\n";

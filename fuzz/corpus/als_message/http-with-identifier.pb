
D
9
envoy-default~gwgateway-proxy

role
default~gwkgw-alsó
²
M
	127.0.0.1¢*€âÏªÀ©Ó:bj

::1‘?zecho_defaultšechoº€’ôS127.0.0.1:8080*/echo/hello2
curl/8.5.0J$5f7e3a1c-0000-4000-8000-000000000001XP"

Èxæ
»
P
	127.0.0.1¢*âÏªÀ©Ó:bj

::1‘?zecho_defaultšechoº€’ôğ
Y127.0.0.1:8080*/echo/hello2
curl/8.5.0J$5f7e3a1c-0000-4000-8000-000000000001R/oldXP"

Èxæ
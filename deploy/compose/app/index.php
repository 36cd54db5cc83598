<?php
// Example page: ?seconds=N keeps a worker busy for N seconds, to drive load.
$seconds = isset($_GET['seconds']) ? min((float)$_GET['seconds'], 30.0) : 0.0;
if ($seconds > 0) {
    usleep((int)($seconds * 1000000));
}
header('Content-Type: text/plain');
echo "served by php-fpm worker ", getmypid(), "\n";
